// The fast paths of sealing must not change a byte: compressed zero blocks copied from a cached image,
// commit chunks moved to the workers instead of copied. Checked against the reference tools
// (`overlaybd-zfile`, `overlaybd-commit -z -t`) on inputs full of zero blocks and 1 MiB-aligned runs,
// and against the copying path for the same bytes.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMIT_IO_BYTES, commitLayer } from '../../src/overlaybd/commit.js';
import { CompressPool } from '../../src/overlaybd/compress-pool.js';
import { writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { TRANSFERABLE_CHUNKS, writeZFile } from '../../src/overlaybd/zfile-writer.js';
import { requireOracle, runOracleTool } from '../helpers/oracle.js';
import { sectorData, tempDir } from './lsmt-fixtures.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const U = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';

let tmp: ReturnType<typeof tempDir>;
let pool: CompressPool;
before(() => {
  tmp = tempDir('zfile-writer');
  pool = new CompressPool(2);
});
after(async () => {
  await pool.close();
  tmp.cleanup();
});

/** Incompressible bytes, the same for the same seed. */
function randomBuf(seed: number, size: number): Buffer {
  return sectorData(seed, 0, Math.ceil(size / 512)).subarray(0, size);
}

/** Zero blocks of every block size, zeros that straddle blocks, text, random, and a short zero tail. */
function zeroHeavy(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 40; i++) {
    if (i % 3 === 0) parts.push(Buffer.alloc(i % 2 ? 40 * KiB : 12 * KiB));
    else if (i % 3 === 1) parts.push(randomBuf(i, 5000));
    else parts.push(Buffer.from('layer text, '.repeat(700)));
  }
  parts.push(Buffer.alloc(3000));
  return Buffer.concat(parts);
}

async function ourZFile(data: Buffer, path: string, algorithm: 'lz4' | 'zstd', blockSize: number): Promise<void> {
  const fd = openSync(path, 'w');
  try {
    await writeZFile((async function* () { yield data; })(), fd, 0, { algorithm, blockSize, overwriteHeader: false, pool });
  } finally {
    closeSync(fd);
  }
}

function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  let i = 0;
  while (i < Math.min(got.length, want.length) && got[i] === want[i]) i++;
  assert.fail(`${what}: ours is ${got.length} bytes, reference ${want.length}; first difference at byte ${i}`);
}

describe('sealing fast paths keep the reference bytes', () => {
  test('writeZFile equals overlaybd-zfile byte for byte on zero-heavy input (lz4, zstd; 4, 8, 32 KiB)', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const data = zeroHeavy();
    const src = join(tmp.path, 'zero-heavy.raw');
    writeFileSync(src, data);
    for (const algorithm of ['lz4', 'zstd'] as const) {
      for (const kib of [4, 8, 32]) {
        const ref = join(tmp.path, `ref-${algorithm}-${kib}.zfile`);
        const ours = join(tmp.path, `our-${algorithm}-${kib}.zfile`);
        const r = await runOracleTool(oracle, 'overlaybd-zfile', ['--algorithm', algorithm, '--bs', String(kib), src, ref]);
        assert.equal(r.exitCode, 0, r.output.slice(-2000));
        await ourZFile(data, ours, algorithm, kib * KiB);
        assertSameBytes(readFileSync(ours), readFileSync(ref), `${algorithm} ${kib} KiB`);
      }
    }
  });

  test('commitLayer → writeLayerBlob equals overlaybd-commit -z -t with zero runs and MiB-sized chunks', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const data = join(tmp.path, 'seal.data');
    const index = join(tmp.path, 'seal.index');
    const r = await runOracleTool(oracle, 'overlaybd-create', [data, index, '1']);
    assert.equal(r.exitCode, 0, r.output.slice(-2000));
    const rw = RwLayer.open(data, index);
    try {
      rw.write(0, Buffer.from('text '.repeat(MiB)).subarray(0, 3 * MiB));
      rw.write(3 * MiB, Buffer.alloc(2 * MiB));
      rw.write(5 * MiB, randomBuf(5, MiB + 4 * KiB));
      rw.write(20 * MiB, Buffer.alloc(8 * KiB, 7));
      rw.write(MiB + 512, randomBuf(6, 4 * KiB)); // splits a MiB-sized run: that chunk is assembled
      rw.discard(4 * MiB, 64 * KiB);
      rw.fsync();
      for (const [algorithm, kib] of [['lz4', 4], ['zstd', 16]] as const) {
        const ref = join(tmp.path, `seal-ref-${algorithm}.tar`);
        const ours = join(tmp.path, `seal-our-${algorithm}.tar`);
        const rc = await runOracleTool(oracle, 'overlaybd-commit', ['-z', '-t', '--algorithm', algorithm, '--bs', String(kib), '--uuid', U, data, index, ref]);
        assert.equal(rc.exitCode, 0, rc.output.slice(-2000));
        const res = await writeLayerBlob(commitLayer(rw, { uuid: U }), ours, { zfile: true, tar: true, algorithm, blockSize: kib * KiB, pool });
        const want = readFileSync(ref);
        assertSameBytes(readFileSync(ours), want, `${algorithm} blob`);
        assert.equal(res.size, want.length);
      }
    } finally {
      rw.close();
    }
  });
});

describe('moving chunks to the workers', () => {
  /** Whole 1 MiB buffers on batch boundaries and off them, and odd pieces between. */
  function chunks(): Buffer[] {
    const whole = (seed: number): Buffer => {
      const b = Buffer.alloc(MiB); // its own ArrayBuffer
      randomBuf(seed, 64 * KiB).copy(b, 0);
      return b;
    };
    const pool8 = Buffer.alloc(8192, 3); // a slice of a bigger buffer is never moved
    return [whole(1), whole(2), pool8.subarray(0, 100), Buffer.alloc(MiB - 100, 9), whole(3), Buffer.alloc(50), whole(4)];
  }

  async function compress(source: AsyncIterable<Uint8Array>, path: string): Promise<Buffer> {
    const fd = openSync(path, 'w');
    try {
      await writeZFile(source, fd, 0, { pool });
    } finally {
      closeSync(fd);
    }
    return readFileSync(path);
  }

  test('a marked source gives the same ZFile as a copied one; only whole aligned batches are detached', async () => {
    const copied = chunks();
    const plain = await compress((async function* () { yield* copied; })(), join(tmp.path, 'copied.zfile'));

    const moved = chunks();
    const gen = (async function* () { yield* moved; })();
    const marked = Object.assign(gen, { [TRANSFERABLE_CHUNKS]: true as const });
    const fast = await compress(marked, join(tmp.path, 'moved.zfile'));
    assertSameBytes(fast, plain, 'moved vs copied');
    assert.deepEqual(moved.map((c) => c.length), [0, 0, 100, MiB - 100, 0, 50, MiB], 'whole buffers on a batch boundary were moved, the rest copied');
  });

  test('commitLayer marks its chunks and cuts data at 1 MiB boundaries of the output', async () => {
    const rw = RwLayer.create(join(tmp.path, 'cut.data'), join(tmp.path, 'cut.index'), { virtualSize: 64 * MiB });
    try {
      rw.write(0, Buffer.alloc(3 * MiB, 1));
      rw.write(8 * MiB, Buffer.alloc(MiB + 512, 2));
      const gen = commitLayer(rw);
      assert.equal(gen[TRANSFERABLE_CHUNKS], true);
      let pos = 0;
      const wholeAt: number[] = [];
      for await (const c of gen) {
        if (c.length === COMMIT_IO_BYTES && c.byteOffset === 0 && c.buffer.byteLength === c.length) wholeAt.push(pos);
        pos += c.length;
      }
      // Output: 4 KiB header, data [4 KiB, 4 KiB + 4 MiB + 512), index, trailer.
      assert.deepEqual(wholeAt, [MiB, 2 * MiB, 3 * MiB]);
    } finally {
      rw.close();
    }
  });
});
