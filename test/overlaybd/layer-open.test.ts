import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferRandomAccess, FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob, writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { sha256File } from '../../src/overlaybd/digest.js';
import { ZFileReader, openZFile } from '../../src/overlaybd/zfile.js';
import { FormatError } from '../../src/util/errors.js';
import { repoRoot } from '../helpers/oracle.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'obdkit-layer-open-test-'));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

async function* inChunks(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let off = 0; off < data.length; off += size) yield data.subarray(off, off + size);
}

test('unwrapLayerBlob detects tar → ZFile → raw by content', () => {
  const raw = unwrapLayerBlob(new FileRandomAccess(join(samples, 'pattern.commit')));
  assert.equal(raw.tar, null);
  assert.equal(raw.zfile, null);
  assert.equal(raw.lsmt.size, 217088);

  const z = unwrapLayerBlob(new FileRandomAccess(join(samples, 'pattern.lz4.zfile')));
  assert.equal(z.tar, null);
  assert.equal(z.zfile?.flags, 0x16, 'index info came from the trailer');
  assert.ok(z.lsmt instanceof ZFileReader);

  const t = unwrapLayerBlob(new FileRandomAccess(join(samples, 'pattern.commit.lz4.zfile.tar')));
  assert.deepEqual(t.tar, { payloadOffset: 1536, payloadLength: 137988 });
  assert.equal(t.zfile?.flags, 0x1b);
  assert.equal(t.lsmt.pread(0, 4).toString('latin1'), 'LSMT');
  assert.match(t.lsmt.name, /pattern\.commit\.lz4\.zfile\.tar\[tar@1536\]\[zfile\]$/);
});

test('sha256File hashes in a worker and matches node:crypto', async () => {
  const p = join(samples, 'ext4-layer0.commit.lz4.zfile.tar');
  const r = await sha256File(p);
  assert.equal(r.digest, 'sha256:215e007e0dac985ee78225b31b8decdfad9ff6872b12667cd00a3b19e4ebc227');
  assert.equal(r.size, readFileSync(p).length);
  await assert.rejects(sha256File(join(tmp, 'missing')), /ENOENT|no such file/);
});

test('writeLayerBlob: every wrapper combination round-trips pattern.commit', async () => {
  const commit = readFileSync(join(samples, 'pattern.commit'));
  const combos = [
    { zfile: true, tar: true, algorithm: 'lz4' as const, blockSize: 4096 },
    { zfile: true, tar: false, algorithm: 'zstd' as const, blockSize: 16384 },
    { zfile: false, tar: true },
    { zfile: false, tar: false },
  ];
  for (const [i, opts] of combos.entries()) {
    const out = join(tmp, `layer${i}.blob`);
    const r = await writeLayerBlob(inChunks(commit, 10_000), out, opts);
    const bytes = readFileSync(out);
    assert.equal(r.size, bytes.length);
    assert.equal(r.digest, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    const u = unwrapLayerBlob(new FileRandomAccess(out));
    assert.equal(u.tar !== null, opts.tar, JSON.stringify(opts));
    assert.equal(u.zfile !== null, opts.zfile, JSON.stringify(opts));
    assert.ok(u.lsmt.pread(0, u.lsmt.size).equals(commit), JSON.stringify(opts));
    if (opts.tar) assert.equal(bytes.length % 512, 0);
  }
  assert.deepEqual(readdirSync(tmp).filter((n) => n.includes('partial')), []);
});

test('writeLayerBlob leaves nothing behind when the input stream fails', async () => {
  async function* failing(): AsyncGenerator<Buffer> {
    yield randomBytes(100_000);
    throw new Error('source broke');
  }
  const out = join(tmp, 'broken.blob');
  await assert.rejects(writeLayerBlob(failing(), out, { zfile: true, tar: true }), /source broke/);
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(tmp).filter((n) => n.includes('broken')), []);
});

test('unwrapLayerBlob on garbage that is neither tar nor ZFile returns it raw', () => {
  const u = unwrapLayerBlob(new BufferRandomAccess(randomBytes(5000), 'junk'));
  assert.equal(u.tar, null);
  assert.equal(u.zfile, null);
  assert.equal(u.lsmt.size, 5000);
});

test('a corrupt block inside a tar-wrapped ZFile names the payload and its offset', () => {
  const blob = Buffer.from(readFileSync(join(samples, 'pattern.commit.lz4.zfile.tar')));
  const zf = blob.subarray(1536, 1536 + 137988);
  const layout = openZFile(new BufferRandomAccess(zf));
  blob[1536 + layout.blockStart[3]! + 1] ^= 0x10;
  const u = unwrapLayerBlob(new BufferRandomAccess(blob, 'layer.tar'));
  assert.throws(() => u.lsmt.pread(3 * 4096, 512), (err: unknown) => {
    assert.ok(err instanceof FormatError);
    assert.equal(err.context.file, 'layer.tar[tar@1536]');
    assert.equal(err.context.offset, layout.blockStart[3]);
    return true;
  });
});
