// The compression and sha256 workers are process-wide and kept between blobs: a second blob must run
// on the very same threads, two blobs written at once must each get their own bytes back, idle
// workers must not keep a process alive, and closing them must leave later writes working.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { sharedCompressPool } from '../../src/overlaybd/compress-pool.js';
import { hashWorkerThreadIds } from '../../src/overlaybd/digest.js';
import { BufferRandomAccess } from '../../src/overlaybd/io.js';
import { closeLayerWriters, unwrapLayerBlob, writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { sectorData, tempDir } from './lsmt-fixtures.js';

let tmp: ReturnType<typeof tempDir>;
before(() => {
  tmp = tempDir('warm-workers');
});
after(async () => {
  await closeLayerWriters();
  tmp.cleanup();
});

/** Mixed content: pattern sectors with runs of zeros, so both the codec and the zero-block path run. */
function content(seed: number, mib: number): Buffer {
  const out = sectorData(seed, 0, mib * 2048);
  for (let off = 0; off < out.length; off += 3 << 20) out.fill(0, off, Math.min(out.length, off + (1 << 20)));
  return out;
}

async function* inChunks(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let off = 0; off < data.length; off += size) yield data.subarray(off, off + size);
}

/** Writes `data` as a tar-wrapped ZFile blob and checks that the blob decodes to it and is named right. */
async function writeAndCheck(name: string, data: Buffer): Promise<void> {
  const out = join(tmp.path, name);
  const r = await writeLayerBlob(inChunks(data, 100_000), out, { zfile: true, tar: true });
  const blob = readFileSync(out);
  assert.equal(r.digest, `sha256:${createHash('sha256').update(blob).digest('hex')}`, `${name} digest`);
  assert.equal(r.size, blob.length);
  const lsmt = unwrapLayerBlob(new BufferRandomAccess(blob, name)).lsmt;
  assert.equal(lsmt.size, data.length);
  assert.ok(lsmt.pread(0, data.length).equals(data), `${name} decodes to its own input`);
}

test('a second blob runs on the same compression and hash threads as the first', async () => {
  await writeAndCheck('first', content(1, 6));
  const compressIds = sharedCompressPool().threadIds();
  const hashIds = hashWorkerThreadIds();
  assert.ok(compressIds.length > 0 && hashIds.length > 0);
  await writeAndCheck('second', content(2, 6));
  assert.deepEqual(sharedCompressPool().threadIds(), compressIds);
  assert.deepEqual(hashWorkerThreadIds(), hashIds);
});

test('blobs written at the same time each get their own bytes and digest', async () => {
  const inputs = [content(3, 5), content(4, 3), content(5, 4)];
  await Promise.all(inputs.map((d, i) => writeAndCheck(`concurrent-${i}`, d)));
  assert.ok(sharedCompressPool().threadIds().length <= sharedCompressPool().threads);
});

test('after closeLayerWriters, the next blob starts new workers and is still correct', async () => {
  const before = sharedCompressPool().threadIds();
  await closeLayerWriters();
  assert.deepEqual(hashWorkerThreadIds(), []);
  await writeAndCheck('after-close', content(6, 2));
  const now = sharedCompressPool().threadIds();
  assert.ok(now.length > 0);
  assert.ok(now.every((id) => !before.includes(id)), 'fresh threads after close');
});

test('warmed and used workers that stay open do not keep a process alive', async () => {
  // The child writes two blobs and warms the pools, never closes them, and must exit by itself; the
  // timeout only turns a hang into a failure.
  const mod = (p: string): string => JSON.stringify(new URL(p, import.meta.url).href);
  const script = `
    import { writeLayerBlob, warmLayerWriters } from ${mod('../../src/overlaybd/layer-open.js')};
    import { sharedCompressPool } from ${mod('../../src/overlaybd/compress-pool.js')};
    import { hashWorkerThreadIds } from ${mod('../../src/overlaybd/digest.js')};
    warmLayerWriters();
    const data = Buffer.alloc(3 << 20, 7);
    for (const name of ['a', 'b']) {
      await writeLayerBlob((async function* () { yield data; })(), ${JSON.stringify(tmp.path)} + '/child-' + name, { zfile: true, tar: true });
    }
    warmLayerWriters();
    process.stdout.write(JSON.stringify({ compress: sharedCompressPool().threadIds().length, hash: hashWorkerThreadIds().length }));
  `;
  const r = await execa(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000, reject: false });
  assert.equal(r.timedOut, false, 'child process kept alive by idle workers');
  assert.equal(r.exitCode, 0, r.stderr);
  const counts = JSON.parse(r.stdout) as { compress: number; hash: number };
  assert.ok(counts.compress > 0 && counts.hash > 0);
});
