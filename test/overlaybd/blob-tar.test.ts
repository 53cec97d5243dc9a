import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import tarStream from 'tar-stream';
import { FormatError } from '../../src/util/errors.js';
import { BufferRandomAccess, FileRandomAccess } from '../../src/overlaybd/io.js';
import {
  PAX_PAYLOAD_OFFSET,
  detectTar,
  encodePaxTarPrefix,
  isPosixTarHeader,
  paxTarSize,
  tarSuffixLength,
} from '../../src/overlaybd/blob-tar.js';
import { repoRoot } from '../helpers/oracle.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'obdkit-tar-test-'));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function wrap(payload: Buffer): Buffer {
  return Buffer.concat([encodePaxTarPrefix(payload.length), payload, Buffer.alloc(tarSuffixLength(payload.length))]);
}

test('re-wrapping pattern.commit.lz4.zfile reproduces the reference tar byte for byte', () => {
  const zfile = readFileSync(join(samples, 'pattern.commit.lz4.zfile'));
  const ref = readFileSync(join(samples, 'pattern.commit.lz4.zfile.tar'));
  const ours = wrap(zfile);
  assert.equal(ours.length, ref.length);
  assert.equal(paxTarSize(zfile.length), ref.length);
  assert.ok(ours.equals(ref));
});

test('detectTar finds the payload of the reference blobs', () => {
  for (const [name, len] of [['pattern.commit.lz4.zfile.tar', 137988], ['ext4-layer0.commit.lz4.zfile.tar', 256796]] as const) {
    assert.deepEqual(detectTar(new FileRandomAccess(join(samples, name))), { payloadOffset: 1536, payloadLength: len });
  }
  assert.equal(detectTar(new FileRandomAccess(join(samples, 'pattern.commit.lz4.zfile'))), null);
  assert.equal(detectTar(new FileRandomAccess(join(samples, 'pattern.commit'))), null);
  assert.equal(detectTar(new BufferRandomAccess(Buffer.alloc(0))), null);
});

test('GNU tar lists and extracts our wrapper as one member with the exact payload', async () => {
  for (const size of [0, 1, 511, 512, 513, 100_000]) {
    const payload = randomBytes(size);
    const blob = join(tmp, `w${size}.tar`);
    writeFileSync(blob, wrap(payload));
    const list = await execa('tar', ['-tvf', blob]);
    assert.equal(list.stdout.trim().split('\n').length, 1);
    assert.match(list.stdout, /overlaybd\.commit$/);
    const out = join(tmp, `x${size}`);
    await execa('mkdir', ['-p', out]);
    await execa('tar', ['-xf', blob, '-C', out]);
    assert.ok(readFileSync(join(out, 'overlaybd.commit')).equals(payload), `size ${size}`);
    assert.deepEqual(detectTar(new FileRandomAccess(blob)), { payloadOffset: PAX_PAYLOAD_OFFSET, payloadLength: size });
  }
});

test('plain ustar (Go archive/tar style) is accepted with payload at 512', async () => {
  const pack = tarStream.pack();
  const payload = randomBytes(3000);
  pack.entry({ name: 'overlaybd.commit', size: payload.length, mode: 0o444, mtime: new Date(0) }, payload);
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const c of pack) parts.push(c as Buffer);
  const blob = Buffer.concat(parts);
  assert.ok(isPosixTarHeader(blob.subarray(0, 512)));
  assert.deepEqual(detectTar(new BufferRandomAccess(blob)), { payloadOffset: 512, payloadLength: 3000 });
});

test('GNU-format tar ("ustar  ") is not treated as tar', async () => {
  const src = join(tmp, 'gnu-src');
  await execa('mkdir', ['-p', src]);
  writeFileSync(join(src, 'overlaybd.commit'), randomBytes(1000));
  const blob = join(tmp, 'gnu.tar');
  await execa('tar', ['--format=gnu', '-cf', blob, '-C', src, 'overlaybd.commit']);
  const head = readFileSync(blob).subarray(0, 512);
  assert.equal(head.toString('latin1', 257, 265), 'ustar  \0');
  assert.equal(detectTar(new FileRandomAccess(blob)), null);
});

test('a bad checksum means "not tar"; a tar claiming more payload than exists is a FormatError', () => {
  const b = wrap(randomBytes(1000));
  const bad = Buffer.from(b);
  bad[10] ^= 1;
  assert.equal(detectTar(new BufferRandomAccess(bad)), null);
  const cut = b.subarray(0, 1536 + 500);
  assert.throws(() => detectTar(new BufferRandomAccess(cut, 'cut.tar')), (err: unknown) => {
    assert.ok(err instanceof FormatError);
    assert.equal(err.context.file, 'cut.tar');
    assert.equal(err.context.offset, cut.length);
    return true;
  });
});
