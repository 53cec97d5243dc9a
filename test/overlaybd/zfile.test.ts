import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream, closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { execa } from 'execa';
import { FormatError, ObdkitError } from '../../src/util/errors.js';
import { BufferRandomAccess, FileRandomAccess, type RandomAccess } from '../../src/overlaybd/io.js';
import {
  FLAG_CALC_DIGEST,
  FLAG_HEADER_OVERWRITE,
  ZFileReader,
  hasFlag,
  openZFile,
  verifyZFile,
} from '../../src/overlaybd/zfile.js';
import { decompressZFile, writeZFile } from '../../src/overlaybd/zfile-writer.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { crc32cRaw } from '../../src/overlaybd/crc32c.js';
import { repoRoot } from '../helpers/oracle.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
const sample = (name: string): string => join(samples, name);
let tmp: string;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'obdkit-zfile-test-'));
});
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** pattern.commit as the -z samples hold it: made without -m, so both user_tag copies are zero. */
function patternCommitWithoutTag(): Buffer {
  const b = Buffer.from(readFileSync(sample('pattern.commit')));
  const tag = 'oracle sample'.length;
  assert.equal(b.toString('latin1', 134, 134 + tag), 'oracle sample');
  b.fill(0, 134, 134 + tag);
  const t = b.length - 4096;
  assert.equal(b.toString('latin1', t + 134, t + 134 + tag), 'oracle sample');
  b.fill(0, t + 134, t + 134 + tag);
  return b;
}

function readAll(ra: RandomAccess): Buffer {
  return ra.pread(0, ra.size);
}

async function* chunks(data: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  let off = 0;
  let i = 0;
  while (off < data.length) {
    const n = sizes[i++ % sizes.length]!;
    yield data.subarray(off, off + n);
    off += n;
  }
}

async function compressToFile(data: Buffer, path: string, opts: Parameters<typeof writeZFile>[3]): Promise<void> {
  const fd = openSync(path, 'w');
  try {
    await writeZFile(chunks(data, [1000, 65536, 7, 300_000]), fd, 0, opts);
  } finally {
    closeSync(fd);
  }
}

function expectFormatError(fn: () => unknown, file: string, re?: RegExp): FormatError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof FormatError, `expected FormatError, got ${String(caught)}`);
  assert.equal(caught.context.file, file);
  assert.equal(typeof caught.context.offset, 'number');
  if (re) assert.match(caught.message, re);
  return caught;
}

describe('golden ZFiles decode', () => {
  test('overlaybd-zfile outputs (lz4, zstd) decompress to pattern.commit exactly', () => {
    const want = readFileSync(sample('pattern.commit'));
    for (const name of ['pattern.lz4.zfile', 'pattern.zstd.zfile']) {
      const r = new ZFileReader(new FileRandomAccess(sample(name)));
      assert.equal(r.size, want.length, name);
      assert.ok(readAll(r).equals(want), name);
      const h = r.layout.header;
      assert.equal(h.flags, 0x13, `${name} header flags`);
      assert.equal(h.indexSize, 0);
      assert.equal(r.layout.trailer?.flags, 0x16);
    }
  });

  test('overlaybd-commit -z outputs (lz4 bs4, zstd bs16, tar) decompress to pattern.commit minus user_tag', () => {
    const want = patternCommitWithoutTag();
    for (const name of ['pattern.commit.lz4.zfile', 'pattern.commit.zstd-bs16.zfile', 'pattern.commit.lz4.zfile.tar']) {
      const u = unwrapLayerBlob(new FileRandomAccess(sample(name)));
      assert.ok(u.zfile, name);
      assert.equal(u.zfile.flags, 0x1b, `${name} header flags`);
      assert.ok(readAll(u.lsmt).equals(want), name);
    }
    const z = openZFile(new FileRandomAccess(sample('pattern.commit.zstd-bs16.zfile')));
    assert.equal(z.algorithm, 'zstd');
    assert.equal(z.info.blockSize, 16384);
    assert.equal(z.trailer, null, 'overwritten header: the trailer is not needed');
  });

  test('random sub-block reads match the plain file', () => {
    const want = readFileSync(sample('pattern.commit'));
    const r = new ZFileReader(new FileRandomAccess(sample('pattern.lz4.zfile')));
    for (const [off, len] of [[0, 1], [4095, 2], [100, 10000], [want.length - 5, 100], [want.length, 10], [131072, 4096]] as const) {
      assert.ok(r.pread(off, len).equals(want.subarray(off, Math.min(want.length, off + len))), `${off}+${len}`);
    }
  });

  test('legacy ext4_64 (no digests, garbage in unused fields) from ext4_64.tar.gz', async () => {
    const out = join(tmp, 'ext4_64');
    const extract = tarStream.extract();
    const done = new Promise<void>((resolve, reject) => {
      extract.on('entry', (header, stream, next) => {
        if (header.name.replace(/^\.\//, '') !== 'ext4_64') {
          stream.resume();
          stream.on('end', next);
          return;
        }
        pipeline(stream, createWriteStream(out)).then(() => next(), reject);
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
    });
    await pipeline(createReadStream(sample('ext4_64.tar.gz')), createGunzip(), extract);
    await done;
    const ra = new FileRandomAccess(out);
    const v = verifyZFile(ra);
    assert.deepEqual(v, { ok: true, blocks: 132309, originalSize: 541937664, algorithm: 'lz4', blockSize: 4096 });
    const u = unwrapLayerBlob(ra);
    assert.ok(u.zfile);
    assert.equal(hasFlag(u.zfile, FLAG_CALC_DIGEST), false);
    assert.notEqual(u.zfile.flagsHigh, 0, 'upper flag bits hold garbage and are tolerated');
    const lsmtHeader = u.lsmt.pread(0, 4096);
    assert.equal(lsmtHeader.toString('latin1', 0, 4), 'LSMT');
    assert.equal(lsmtHeader.toString('latin1', 56, 92), 'C02FB491-B4D4-4904-8684-A014D032AF78');
    const trailer = u.lsmt.pread(u.lsmt.size - 4096, 4096);
    assert.equal(trailer.toString('latin1', 0, 4), 'LSMT');
    assert.equal(trailer.readUInt32LE(28), 6);
    assert.equal(Number(trailer.readBigUInt64LE(40)), 8448, 'index_size incl. padding');
    ra.close();
  });

  test('ext4 layers open through tar + ZFile with the README header fields', () => {
    const cases = [
      { name: 'ext4-layer0.commit.lz4.zfile.tar', size: 4767744, uuid: '11111111-2222-3333-4444-555555555555', parent: '00000000-0000-0000-0000-000000000000' },
      { name: 'ext4-layer1.commit.lz4.zfile.tar', size: 4636672, uuid: '66666666-7777-8888-9999-000000000000', parent: '11111111-2222-3333-4444-555555555555' },
    ];
    for (const c of cases) {
      const u = unwrapLayerBlob(new FileRandomAccess(sample(c.name)));
      assert.equal(u.tar?.payloadOffset, 1536, c.name);
      assert.equal(u.lsmt.size, c.size, c.name);
      assert.equal(u.zfile?.blockSize, 4096);
      assert.equal(u.zfile?.algo, 1);
      const h = u.lsmt.pread(0, 4096);
      assert.equal(h.readUInt32LE(28), 7, `${c.name} LSMT header flags`);
      assert.equal(h.toString('latin1', 56, 92), c.uuid);
      assert.equal(h.toString('latin1', 93, 129), c.parent);
      assert.equal(Number(h.readBigUInt64LE(48)), 64 * 2 ** 30, 'virtual size 64 GiB');
      assert.equal(u.lsmt.pread(u.lsmt.size - 4096, 4).toString('latin1'), 'LSMT');
    }
  });

  test('verifyZFile passes every good sample', () => {
    for (const name of ['pattern.lz4.zfile', 'pattern.zstd.zfile', 'pattern.commit.lz4.zfile', 'pattern.commit.zstd-bs16.zfile']) {
      const v = verifyZFile(new FileRandomAccess(sample(name)));
      assert.equal(v.ok, true, `${name}: ${JSON.stringify(v)}`);
    }
    for (const name of ['pattern.commit.lz4.zfile.tar', 'ext4-layer0.commit.lz4.zfile.tar', 'ext4-layer1.commit.lz4.zfile.tar']) {
      const u = unwrapLayerBlob(new FileRandomAccess(sample(name)));
      assert.ok(u.lsmt instanceof ZFileReader);
      const inner = (u.lsmt as unknown as { ra: RandomAccess }).ra;
      const v = verifyZFile(inner);
      assert.equal(v.ok, true, `${name}: ${JSON.stringify(v)}`);
    }
  });

  test('the 64 KiB quirk sample is refused with file and offset', () => {
    const file = sample('quirk-pattern.lz4-bs64.zfile');
    const err = expectFormatError(() => new ZFileReader(new FileRandomAccess(file)), file, /stored length 65798 exceeds 65536/);
    assert.ok(err.message.includes(file));
    const v = verifyZFile(new FileRandomAccess(file));
    assert.equal(v.ok, false);
  });
});

describe('bad input gives FormatError with file and offset', () => {
  const good = (): Buffer => Buffer.from(readFileSync(sample('pattern.lz4.zfile')));

  test('empty file', () => {
    expectFormatError(() => new ZFileReader(new BufferRandomAccess(Buffer.alloc(0), 'empty')), 'empty', /too small/);
  });

  test('truncated file', () => {
    const b = good();
    for (const len of [100, 600, b.length - 1, b.length - 600]) {
      const name = `trunc-${len}`;
      // Either the structure check or a block read must fail; nothing may hang or escape.
      let err: unknown;
      try {
        readAll(new ZFileReader(new BufferRandomAccess(b.subarray(0, len), name)));
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof FormatError, `${name}: ${String(err)}`);
      assert.equal(err.context.file, name);
      assert.equal(verifyZFile(new BufferRandomAccess(b.subarray(0, len), name)).ok, false);
    }
  });

  test('wrong magic', () => {
    const b = good();
    b[3] ^= 0xff;
    expectFormatError(() => new ZFileReader(new BufferRandomAccess(b, 'badmagic')), 'badmagic', /magic0/);
    const t = good();
    t[t.length - 512 + 10] ^= 0xff;
    const e = expectFormatError(() => new ZFileReader(new BufferRandomAccess(t, 'badtrailer')), 'badtrailer', /magic1/);
    assert.equal(e.context.offset, t.length - 512 + 8);
  });

  test('header digest mismatch', () => {
    const b = good();
    b[300] = 1;
    const e = expectFormatError(() => new ZFileReader(new BufferRandomAccess(b, 'hdr')), 'hdr', /digest/);
    assert.equal(e.context.offset, 28);
  });

  test('one flipped byte inside a block', () => {
    const b = good();
    const layout = openZFile(new BufferRandomAccess(b));
    const at = layout.blockStart[7]! + 3;
    b[at] ^= 0x40;
    const ra = new BufferRandomAccess(b, 'flip');
    const r = new ZFileReader(ra);
    assert.ok(r.pread(0, 4096).length === 4096, 'other blocks still read');
    const e = expectFormatError(() => r.pread(7 * 4096, 10), 'flip', /block 7 CRC mismatch/);
    assert.equal(e.context.offset, layout.blockStart[7]);
    const v = verifyZFile(ra);
    assert.deepEqual(v.ok ? null : v.offset, layout.blockStart[7]);
  });

  test('jump-table entry past the end', () => {
    const b = good();
    const layout = openZFile(new BufferRandomAccess(b));
    // Block 5's length becomes huge (still <= 64 KiB): the running end passes the jump table.
    const entry = layout.info.indexOffset + 4 * 5;
    b.writeUInt32LE(60000, entry);
    // Keep the jump-table CRC right so that the structural check is what fires.
    b.writeUInt32LE(crc32cRaw(b.subarray(layout.info.indexOffset, layout.info.indexOffset + 4 * layout.blockCount)), b.length - 512 + 64);
    const e = expectFormatError(() => new ZFileReader(new BufferRandomAccess(b, 'jt')), 'jt');
    assert.ok(e.context.offset! >= layout.info.indexOffset, e.message);
    // And with the CRC left stale, the CRC check names the table.
    const c = good();
    c.writeUInt32LE(70000, entry);
    expectFormatError(() => new ZFileReader(new BufferRandomAccess(c, 'jt2')), 'jt2', /jump table CRC|exceeds/);
  });

  test('random garbage never hangs or throws anything but FormatError', () => {
    const base = good();
    let seed = 12345;
    const next = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < 200; i++) {
      const b = Buffer.from(base);
      const at = Math.floor(next() * b.length);
      b[at] ^= 1 + Math.floor(next() * 255);
      try {
        readAll(new ZFileReader(new BufferRandomAccess(b, 'fuzz')));
      } catch (err) {
        assert.ok(err instanceof FormatError, `flip at ${at}: ${String(err)}`);
      }
    }
  });
});

describe('writer round trips', () => {
  const mixed = (size: number): Buffer => {
    const b = Buffer.alloc(size);
    const text = Buffer.from('overlaybd builds block images; '.repeat(200));
    for (let off = 0; off < size; off += 40960) {
      text.copy(b, off, 0, Math.min(text.length, size - off));
      randomBytes(Math.min(4096, Math.max(0, size - off - 8192))).copy(b, Math.min(size, off + 8192));
    }
    return b;
  };
  const inputs: Array<[string, Buffer]> = [
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([42])],
    ['all zero 1 MiB', Buffer.alloc(1 << 20)],
    ['random 300 KiB + 5', randomBytes(300 * 1024 + 5)],
    ['mixed, not a block multiple', mixed(777_777)],
  ];

  for (const algorithm of ['lz4', 'zstd'] as const) {
    for (const blockSize of [4096, 8192, 16384, 32768]) {
      test(`${algorithm} bs ${blockSize / 1024} KiB`, async () => {
        for (const [label, data] of inputs) {
          const path = join(tmp, `rt-${algorithm}-${blockSize}.zfile`);
          await compressToFile(data, path, { algorithm, blockSize, threads: 2, batchBytes: 64 * 1024 });
          const ra = new FileRandomAccess(path);
          try {
            const v = verifyZFile(ra);
            assert.equal(v.ok, true, `${label}: ${JSON.stringify(v)}`);
            const r = new ZFileReader(ra);
            assert.equal(r.size, data.length, label);
            assert.ok(readAll(r).equals(data), label);
            assert.equal(r.layout.header.flags, 27);
            assert.equal(hasFlag(r.layout.header, FLAG_HEADER_OVERWRITE), true);
          } finally {
            ra.close();
          }
        }
      });
    }
  }

  test('without header overwrite the header keeps flags 19 and zero index fields', async () => {
    const path = join(tmp, 'noover.zfile');
    await compressToFile(readFileSync(sample('pattern.commit')), path, { overwriteHeader: false });
    const z = openZFile(new FileRandomAccess(path));
    assert.equal(z.header.flags, 19);
    assert.equal(z.header.indexOffset, 0);
    assert.equal(z.header.originalFileSize, 0);
    assert.equal(z.trailer?.flags, 22);
    // Same structure as the reference tool's output for the same input.
    const ref = openZFile(new FileRandomAccess(sample('pattern.lz4.zfile')));
    assert.equal(z.blockCount, ref.blockCount);
    assert.equal(z.info.originalFileSize, ref.info.originalFileSize);
  });

  test('64 KiB and other unsupported block sizes are refused', async () => {
    const fd = openSync(join(tmp, 'bs64.zfile'), 'w');
    try {
      for (const blockSize of [65536, 2048, 12288]) {
        await assert.rejects(writeZFile(chunks(Buffer.alloc(10), [10]), fd, 0, { blockSize }), (err: unknown) => {
          assert.ok(err instanceof ObdkitError);
          assert.match(err.message, /block size/);
          return true;
        });
      }
    } finally {
      closeSync(fd);
    }
  });

  test('writes at an offset leave the bytes before it alone', async () => {
    const path = join(tmp, 'offset.bin');
    writeFileSync(path, Buffer.alloc(1536, 0x5a));
    const data = mixed(100_000);
    const fd = openSync(path, 'r+');
    let size: number;
    try {
      size = (await writeZFile(chunks(data, [4096]), fd, 1536, {})).compressedSize;
    } finally {
      closeSync(fd);
    }
    const all = readFileSync(path);
    assert.equal(all.length, 1536 + size);
    assert.ok(all.subarray(0, 1536).equals(Buffer.alloc(1536, 0x5a)));
    assert.ok(readAll(new ZFileReader(new BufferRandomAccess(all.subarray(1536)))).equals(data));
  });

  test('decompressZFile streams a file back out', async () => {
    const out = join(tmp, 'x.commit');
    const n = await decompressZFile(new FileRandomAccess(sample('pattern.zstd.zfile')), out);
    assert.equal(n, 217088);
    assert.ok(readFileSync(out).equals(readFileSync(sample('pattern.commit'))));
  });
});

describe('compress pool', () => {
  test('keeps batch order with more batches than workers, and an idle pool lets the process exit', async () => {
    // A child process compresses without closing its pool; it must still exit by itself.
    const script = `
      import { CompressPool } from ${JSON.stringify(new URL('../../src/overlaybd/compress-pool.js', import.meta.url).href)};
      const pool = new CompressPool(2);
      const inputs = Array.from({ length: 12 }, (_, i) => new Uint8Array(8192).fill(i));
      const out = await Promise.all(inputs.map((b) => pool.compress('lz4', 4096, b.buffer, b.length)));
      process.stdout.write(JSON.stringify(out.map((o) => [o.lengths.length, new Uint8Array(o.input)[0]])));
    `;
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000, reject: false });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), Array.from({ length: 12 }, (_, i) => [2, i]));
  });
});

describe('memory', () => {
  test('compressing a 1 GiB stream keeps RSS growth far below the input', async (t) => {
    const total = 1 << 30;
    const piece = 1 << 20;
    const text = Buffer.alloc(piece, 'line of a text-like layer, with numbers 0123456789\n');
    const rand = randomBytes(piece);
    const zero = Buffer.alloc(piece);
    async function* gen(): AsyncGenerator<Buffer> {
      for (let off = 0; off < total; off += piece) {
        const k = (off / piece) % 8;
        yield k < 4 ? zero : k < 7 ? text : rand;
      }
    }
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 50);
    const fd = openSync('/dev/null', 'w');
    try {
      const r = await writeZFile(gen(), fd, 0, {});
      assert.equal(r.originalSize, total);
      assert.equal(r.blockCount, total / 4096);
    } finally {
      clearInterval(timer);
      closeSync(fd);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const growthMiB = (peak - baseline) / 2 ** 20;
    t.diagnostic(`peak RSS growth ${growthMiB.toFixed(0)} MiB for a 1024 MiB input`);
    assert.ok(growthMiB < 300, `RSS grew by ${growthMiB.toFixed(0)} MiB while compressing 1024 MiB`);
  });
});
