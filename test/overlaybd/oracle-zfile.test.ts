// Cross-checks our ZFile, tar and layer-blob output against the reference overlaybd tools, and our
// reader against theirs. The tools are located by test/helpers/oracle.ts.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob, writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { ZFileReader } from '../../src/overlaybd/zfile.js';
import { writeZFile } from '../../src/overlaybd/zfile-writer.js';
import { CompressPool } from '../../src/overlaybd/compress-pool.js';
import { commitLayer } from '../../src/overlaybd/commit.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { obdCheck, repoRoot, requireOracle, runOracleTool } from '../helpers/oracle.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
let tmp: string;
let pool: CompressPool;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'obdkit-oracle-zfile-'));
  pool = new CompressPool(2);
});
after(async () => {
  await pool.close();
  rmSync(tmp, { recursive: true, force: true });
});

function mixed(size: number): Buffer {
  const b = Buffer.alloc(size);
  const text = Buffer.from('FROM debian:12\nRUN apt-get update && apt-get install -y build-essential\n'.repeat(120));
  for (let off = 0; off < size; off += 65536) {
    text.copy(b, off, 0, Math.min(text.length, size - off));
    if (off + 20000 < size) randomBytes(Math.min(9000, size - off - 20000)).copy(b, off + 20000);
  }
  return b;
}

const inputs: Array<[string, Buffer]> = [
  ['mixed-nonmultiple', mixed(1_000_003)],
  ['zeros', Buffer.alloc(512 * 1024)],
  ['random', randomBytes(200_000)],
  ['empty', Buffer.alloc(0)],
];

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  if (b.length) yield b;
}

async function ourZFile(data: Buffer, path: string, algorithm: 'lz4' | 'zstd', blockSize: number, overwriteHeader: boolean): Promise<void> {
  const fd = openSync(path, 'w');
  try {
    await writeZFile(once(data), fd, 0, { algorithm, blockSize, overwriteHeader, pool });
  } finally {
    closeSync(fd);
  }
}

let n = 0;
const fresh = (ext: string): string => join(tmp, `f${n++}${ext}`);

async function assertVerifies(dir: string, path: string, label: string): Promise<void> {
  const r = await runOracleTool(dir, 'overlaybd-zfile', ['--verify', path]);
  assert.equal(r.exitCode, 0, `${label}: overlaybd-zfile --verify failed:\n${r.output.slice(-2000)}`);
  assert.match(r.output, /is a valid zfile blob/, label);
}

async function assertExtractsTo(dir: string, path: string, want: Buffer, label: string, tar = false): Promise<void> {
  const out = fresh('.x');
  const r = await runOracleTool(dir, 'overlaybd-zfile', [...(tar ? ['-t'] : []), '-x', path, out]);
  assert.equal(r.exitCode, 0, `${label}: overlaybd-zfile -x failed:\n${r.output.slice(-2000)}`);
  assert.ok(readFileSync(out).equals(want), `${label}: overlaybd-zfile -x output differs`);
  rmSync(out);
}

describe('reference tools accept our ZFiles', () => {
  for (const algorithm of ['lz4', 'zstd'] as const) {
    for (const kib of [4, 8, 16, 32]) {
      test(`${algorithm} bs ${kib} KiB: --verify and -x round trip`, async (t: TestContext) => {
        const dir = requireOracle(t);
        if (!dir) return;
        for (const [label, data] of inputs) {
          for (const overwrite of [true, false]) {
            const name = `${label} ${algorithm}/${kib}K overwrite=${overwrite}`;
            const path = fresh('.zfile');
            await ourZFile(data, path, algorithm, kib * 1024, overwrite);
            await assertVerifies(dir, path, name);
            await assertExtractsTo(dir, path, data, name);
            rmSync(path);
          }
        }
      });
    }
  }

  test('tar-wrapped layer blobs: --verify, -t -x and obd-check', async (t: TestContext) => {
    const dir = requireOracle(t);
    if (!dir) return;
    const commit = readFileSync(join(samples, 'pattern.commit'));
    for (const algorithm of ['lz4', 'zstd'] as const) {
      const blob = fresh('.tar');
      await writeLayerBlob(once(commit), blob, { zfile: true, tar: true, algorithm, blockSize: 4096, pool });
      await assertVerifies(dir, blob, `tar ${algorithm}`);
      await assertExtractsTo(dir, blob, commit, `tar ${algorithm}`, true);
      const v = await obdCheck(dir, blob);
      assert.equal(v.result, 'VALID', `obd-check ${algorithm}: ${v.reason}\n${v.output.slice(-2000)}`);
    }
  });

  test('obd-check accepts every blob form writeLayerBlob makes from pattern.commit', async (t: TestContext) => {
    const dir = requireOracle(t);
    if (!dir) return;
    const commit = readFileSync(join(samples, 'pattern.commit'));
    for (const opts of [
      { zfile: true, tar: false, blockSize: 32768 },
      { zfile: true, tar: true, overwriteHeader: false },
      { zfile: false, tar: false },
    ]) {
      const blob = fresh('.blob');
      await writeLayerBlob(once(commit), blob, { ...opts, pool });
      const v = await obdCheck(dir, blob);
      assert.equal(v.result, 'VALID', `${JSON.stringify(opts)}: ${v.reason}\n${v.output.slice(-2000)}`);
    }
  });

  test('obd-check rejects a blob with one flipped compressed byte', async (t: TestContext) => {
    const dir = requireOracle(t);
    if (!dir) return;
    const blob = fresh('.tar');
    await writeLayerBlob(once(readFileSync(join(samples, 'pattern.commit'))), blob, { zfile: true, tar: true, pool });
    const b = readFileSync(blob);
    b[1536 + 512 + 10] ^= 0x20;
    writeFileSync(blob, b);
    const v = await obdCheck(dir, blob);
    assert.equal(v.result, 'INVALID', v.output.slice(-2000));
  });
});

describe('our reader decodes the reference tools\' output', () => {
  test('overlaybd-zfile lz4/zstd at 4..32 KiB, plain and -t', async (t: TestContext) => {
    const dir = requireOracle(t);
    if (!dir) return;
    for (const [label, data] of inputs) {
      const src = fresh('.raw');
      writeFileSync(src, data);
      for (const algorithm of ['lz4', 'zstd']) {
        for (const kib of [4, 16, 32]) {
          for (const tar of [false, true]) {
            const name = `${label} ${algorithm}/${kib}K tar=${tar}`;
            const out = fresh(tar ? '.zfile.tar' : '.zfile');
            const r = await runOracleTool(dir, 'overlaybd-zfile', [...(tar ? ['-t'] : []), '--algorithm', algorithm, '--bs', String(kib), src, out]);
            assert.equal(r.exitCode, 0, `${name}: overlaybd-zfile failed:\n${r.output.slice(-2000)}`);
            const ra = new FileRandomAccess(out);
            try {
              const u = unwrapLayerBlob(ra);
              assert.equal(u.tar !== null, tar, name);
              assert.ok(u.lsmt instanceof ZFileReader, name);
              assert.equal(u.zfile?.blockSize, kib * 1024, name);
              assert.ok(u.lsmt.pread(0, u.lsmt.size).equals(data), name);
            } finally {
              ra.close();
              rmSync(out);
            }
          }
        }
      }
      rmSync(src);
    }
  });
});

describe('committed layers', () => {
  test('commitLayer(pattern RW pair) → writeLayerBlob passes obd-check and decodes to pattern.commit', async (t: TestContext) => {
    const dir = requireOracle(t);
    if (!dir) return;
    const data = fresh('.data');
    const index = fresh('.index');
    writeFileSync(data, readFileSync(join(samples, 'pattern.rw.data')));
    writeFileSync(index, readFileSync(join(samples, 'pattern.rw.index')));
    const rw = RwLayer.open(data, index, { readOnly: true });
    try {
      for (const tar of [true, false]) {
        const blob = fresh(tar ? '.tar' : '.zfile');
        await writeLayerBlob(
          commitLayer(rw, { uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', userTag: 'oracle sample' }),
          blob,
          { zfile: true, tar, pool },
        );
        const v = await obdCheck(dir, blob);
        assert.equal(v.result, 'VALID', `tar=${tar}: ${v.reason}\n${v.output.slice(-2000)}`);
        const u = unwrapLayerBlob(new FileRandomAccess(blob));
        assert.ok(u.lsmt.pread(0, u.lsmt.size).equals(readFileSync(join(samples, 'pattern.commit'))), 'same bytes as overlaybd-commit');
      }
    } finally {
      rw.close();
    }
  });
});
