// Commit: our sealed output must equal `overlaybd-commit`'s byte for byte, for the golden pair and for
// pairs written here (overwrites, discards, writes over 16383 sectors, long contiguous runs, an empty
// layer), whether the pair was created by `overlaybd-create` or by us; and the reference tools must
// accept what we write.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { COMMIT_CHUNK_SECTORS, commitLayer, commitLayerToFile, planCommit } from '../../src/overlaybd/commit.js';
import { BufferRandomAccess, FileRandomAccess } from '../../src/overlaybd/io.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { HT_SPACE } from '../../src/overlaybd/lsmt-header.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { MAX_LENGTH, RECORD_SIZE, decodeMapping, isInvalidRecord } from '../../src/overlaybd/segment.js';
import { obdCheck, repoRoot, requireOracle, runOracleTool } from '../helpers/oracle.js';
import { SectorModel, prng, sectorData, tempDir } from './lsmt-fixtures.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
const U = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
const P = '11111111-2222-3333-4444-555555555555';
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

let tmp: ReturnType<typeof tempDir>;
before(() => {
  tmp = tempDir('commit');
});
after(() => tmp.cleanup());

async function collect(gen: AsyncGenerator<Buffer>): Promise<{ bytes: Buffer; maxChunk: number }> {
  const parts: Buffer[] = [];
  let maxChunk = 0;
  for await (const c of gen) {
    parts.push(c);
    maxChunk = Math.max(maxChunk, c.length);
  }
  return { bytes: Buffer.concat(parts), maxChunk };
}

function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  let i = 0;
  while (i < Math.min(got.length, want.length) && got[i] === want[i]) i++;
  assert.fail(`${what}: ours is ${got.length} bytes, reference ${want.length}; first difference at byte ${i}`);
}

/** Everything the commit recipe has special cases for. */
function writeScenario(l: RwLayer): void {
  l.write(0, sectorData(1, 0, 128));
  l.write(10 * MiB, sectorData(2, 20480, 18435)); // > 16383 sectors: three 4 MiB-capped records
  l.write(12 * MiB, sectorData(3, 24576, 8)); // overwrite inside it
  l.write(48 * KiB, sectorData(4, 96, 64)); // overlaps the end of the first write
  l.discard(20 * MiB, 10 * MiB); // > 16383 sectors: two zeroed records
  l.discard(11 * MiB, 64 * KiB); // zeroed hole inside data
  l.write(25 * MiB, sectorData(5, 51200, 16)); // data inside the discarded range
  l.write(GiB - 4 * KiB, sectorData(6, 0, 8)); // the last sectors of the disk
  l.write(1001 * 512, sectorData(7, 1001, 3)); // odd sector, odd length
  for (let i = 0; i < 3000; i++) l.write(100 * MiB + i * 4 * KiB, sectorData(8, i, 8)); // long contiguous run
  l.write(300 * MiB, sectorData(9, 0, 40960)); // 20 MiB in one call: five 4 MiB records, contiguous on disk
  l.discard(200 * MiB, 4 * MiB);
  l.discard(204 * MiB, 2 * MiB); // adjacent zeroed records (they merge: 8192 + 4096 < 16383)
  const rnd = prng(99);
  for (let i = 0; i < 200; i++) {
    const len = 1 + rnd(40);
    const off = rnd(4096 - len);
    if (rnd(5) === 0) l.discard(off * 512, len * 512);
    else l.write(off * 512, sectorData(100 + i, off, len));
  }
}

describe('commit', () => {
  test('the golden pair commits to pattern.commit byte for byte', async () => {
    const l = RwLayer.open(join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), { readOnly: true });
    try {
      const { bytes } = await collect(commitLayer(l, { uuid: U, userTag: 'oracle sample' }));
      assertSameBytes(bytes, readFileSync(join(samples, 'pattern.commit')), 'pattern.commit');
      const plan = planCommit(l.mappings());
      assert.deepEqual(plan, { dataBytes: 204800, records: 4, indexRecords: 256, indexOffset: 208896, totalBytes: 217088 });
    } finally {
      l.close();
    }
  });

  test('committing the close_seal form gives the same layer', async () => {
    const ra = new FileRandomAccess(join(samples, 'pattern.sealed'));
    try {
      const { bytes } = await collect(commitLayer(openSealedLayer(ra), { uuid: U, userTag: 'oracle sample' }));
      assertSameBytes(bytes, readFileSync(join(samples, 'pattern.commit')), 'commit of pattern.sealed');
    } finally {
      ra.close();
    }
  });

  test('pairs from overlaybd-create and from RwLayer.create commit identically with both tools', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const dir = join(tmp.path, 'scenario');
    mkdirSync(dir);
    const r = await runOracleTool(oracle, 'overlaybd-create', ['-u', P, join(dir, 'ref.data'), join(dir, 'ref.index'), '1']);
    assert.equal(r.exitCode, 0, r.output);
    RwLayer.create(join(dir, 'our.data'), join(dir, 'our.index'), { virtualSize: GiB, parentUuid: P }).close();

    for (const who of ['ref', 'our']) {
      const data = join(dir, `${who}.data`);
      const index = join(dir, `${who}.index`);
      const l = RwLayer.open(data, index);
      try {
        writeScenario(l);
        l.fsync();
      } finally {
        l.close();
      }
      const refOut = join(dir, `${who}.ref.commit`);
      const rc = await runOracleTool(oracle, 'overlaybd-commit', ['--uuid', U, '-m', 'scenario layer', data, index, refOut]);
      assert.equal(rc.exitCode, 0, rc.output);
      const src = RwLayer.open(data, index, { readOnly: true });
      try {
        const { bytes, maxChunk } = await collect(commitLayer(src, { uuid: U, userTag: 'scenario layer' }));
        const want = readFileSync(refOut);
        assertSameBytes(bytes, want, `${who} pair`);
        assert.ok(maxChunk <= MiB, `chunks stay bounded (largest ${maxChunk})`);
        assert.equal(planCommit(src.mappings()).totalBytes, want.length);
        // The recipe's visible consequences.
        const sealed = openSealedLayer(new FileRandomAccess(refOut));
        assert.equal(sealed.parentUuid, P);
        assert.equal(sealed.trailer.indexSize % 256, 0);
        assert.ok(sealed.records.some((m) => m.length === 255 * COMMIT_CHUNK_SECTORS), 'runs of 64-sector chunks merge to 16320 sectors');
        assert.ok(sealed.records.some((m) => m.length === 2047 * 8), 'runs of 8-sector writes merge to 16376 sectors');
        assert.ok(sealed.records.every((m) => m.length < MAX_LENGTH));
        assert.ok(sealed.records.some((m) => m.zeroed && m.offset === (200 * MiB) / 512 && m.length === 12288), 'adjacent zeroed records merge');
        (sealed.data as FileRandomAccess).close();
      } finally {
        src.close();
      }
    }
    // And with an explicit parent uuid overriding the source's, through the file writer.
    const out = join(dir, 'our.p.commit');
    const refOut = join(dir, 'our.p.ref.commit');
    const rc = await runOracleTool(oracle, 'overlaybd-commit', ['--uuid', U, '-p', U, join(dir, 'our.data'), join(dir, 'our.index'), refOut]);
    assert.equal(rc.exitCode, 0, rc.output);
    const src = RwLayer.open(join(dir, 'our.data'), join(dir, 'our.index'), { readOnly: true });
    try {
      const { size } = await commitLayerToFile(src, out, { uuid: U, parentUuid: U });
      assert.equal(size, statSync(out).size);
    } finally {
      src.close();
    }
    assertSameBytes(readFileSync(out), readFileSync(refOut), 'explicit parent');
    const verdict = await obdCheck(oracle, out);
    assert.equal(verdict.result, 'VALID', verdict.output);
  });

  test('an empty layer: no data, empty index, no padding', async (t: TestContext) => {
    const dir = join(tmp.path, 'empty');
    mkdirSync(dir);
    RwLayer.create(join(dir, 'd'), join(dir, 'i'), { virtualSize: GiB }).close();
    const src = RwLayer.open(join(dir, 'd'), join(dir, 'i'), { readOnly: true });
    let ours: Buffer;
    try {
      ours = (await collect(commitLayer(src, { uuid: U }))).bytes;
    } finally {
      src.close();
    }
    assert.equal(ours.length, 2 * HT_SPACE);
    const l = openSealedLayer(new BufferRandomAccess(ours, 'empty'));
    assert.equal(l.trailer.indexSize, 0);
    assert.equal(l.trailer.indexOffset, HT_SPACE);
    const oracle = requireOracle(t);
    if (!oracle) return;
    const refOut = join(dir, 'ref.commit');
    const rc = await runOracleTool(oracle, 'overlaybd-commit', ['--uuid', U, join(dir, 'd'), join(dir, 'i'), refOut]);
    assert.equal(rc.exitCode, 0, rc.output);
    assertSameBytes(ours, readFileSync(refOut), 'empty layer');
  });

  test('a sealed file made by the reference --seal commits like --commit_sealed', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const dir = join(tmp.path, 'seal');
    mkdirSync(dir);
    const d = join(dir, 'd');
    const i = join(dir, 'i');
    const l = RwLayer.create(d, i, { virtualSize: GiB });
    try {
      writeScenario(l);
    } finally {
      l.close();
    }
    let rc = await runOracleTool(oracle, 'overlaybd-commit', ['--seal', d, i]);
    assert.equal(rc.exitCode, 0, rc.output);
    const refOut = join(dir, 'ref.commit');
    rc = await runOracleTool(oracle, 'overlaybd-commit', ['--commit_sealed', '--uuid', U, '-m', 'm', d, refOut]);
    assert.equal(rc.exitCode, 0, rc.output);
    const ra = new FileRandomAccess(d);
    try {
      const sealed = openSealedLayer(ra);
      assert.equal(sealed.header.flags, 3);
      const { bytes } = await collect(commitLayer(sealed, { uuid: U, userTag: 'm' }));
      assertSameBytes(bytes, readFileSync(refOut), 'commit of a sealed file');
    } finally {
      ra.close();
    }
  });

  test('a sparse pair commits like overlaybd-commit commits it', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const dir = join(tmp.path, 'sparse');
    mkdirSync(dir);
    const d = join(dir, 'd');
    const i = join(dir, 'i');
    const r = await runOracleTool(oracle, 'overlaybd-create', ['-s', '-u', P, d, i, '1']);
    assert.equal(r.exitCode, 0, r.output);
    const fd = openSync(d, 'r+');
    try {
      // The disk lives at byte 4096 + X; an extent longer than 16383 sectors, small ones, the last block.
      for (const [sector, count] of [
        [0, 8],
        [64, 40000],
        [100000, 3],
        [2 * 1024 * 1024 - 8, 8],
      ] as const) {
        writeSync(fd, sectorData(sector, sector, count), 0, count * 512, HT_SPACE + sector * 512);
      }
    } finally {
      closeSync(fd);
    }
    const refOut = join(dir, 'ref.commit');
    const rc = await runOracleTool(oracle, 'overlaybd-commit', ['--uuid', U, '-m', 'sparse', d, i, refOut]);
    assert.equal(rc.exitCode, 0, rc.output);
    const src = RwLayer.open(d, i, { readOnly: true });
    try {
      const { bytes } = await collect(commitLayer(src, { uuid: U, userTag: 'sparse' }));
      assertSameBytes(bytes, readFileSync(refOut), 'sparse pair');
    } finally {
      src.close();
    }
  });

  test('refuses user tags over 256 bytes and unsorted sources; removes a partial output file', async () => {
    const l = RwLayer.open(join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), { readOnly: true });
    const out = join(tmp.path, 'partial.commit');
    try {
      await assert.rejects(commitLayerToFile(l, out, { userTag: 'x'.repeat(257) }), RangeError);
      assert.throws(() => statSync(out), /ENOENT/);
      const unsorted = { ...l, mappings: () => l.mappings().reverse(), data: l.data, virtualSize: l.virtualSize, parentUuid: l.parentUuid };
      await assert.rejects(collect(commitLayer(unsorted)), /not sorted/);
    } finally {
      l.close();
    }
    // A source whose data file is shorter than its records claim.
    copyFileSync(join(samples, 'pattern.rw.data'), join(tmp.path, 'short.data'));
    copyFileSync(join(samples, 'pattern.rw.index'), join(tmp.path, 'short.index'));
    const s = RwLayer.open(join(tmp.path, 'short.data'), join(tmp.path, 'short.index'), { readOnly: true });
    try {
      const lying = { mappings: () => s.mappings().map((m) => ({ ...m, moffset: m.moffset + 400 })), data: s.data, virtualSize: s.virtualSize, parentUuid: s.parentUuid };
      await assert.rejects(collect(commitLayer(lying)), /FormatError|ends inside/);
    } finally {
      s.close();
    }
  });

  test('index layout: padding records fill the last 4 KiB page', async () => {
    const l = RwLayer.open(join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), { readOnly: true });
    try {
      const { bytes } = await collect(commitLayer(l, {}));
      const at = 208896;
      let invalid = 0;
      for (let p = at; p < bytes.length - HT_SPACE; p += RECORD_SIZE) if (isInvalidRecord(bytes, p)) invalid++;
      assert.equal(invalid, 252);
      assert.equal(decodeMapping(bytes, at).length, 128);
      // No uuid given: the null uuid, as the reference writes.
      assert.equal(openSealedLayer(new BufferRandomAccess(bytes, 'x')).uuid, '00000000-0000-0000-0000-000000000000');
    } finally {
      l.close();
    }
  });
});

describe('commit round trip', () => {
  test('a committed layer reads back as the writable layer did', async () => {
    const dir = join(tmp.path, 'roundtrip');
    mkdirSync(dir);
    const sectors = 20000;
    const l = RwLayer.create(join(dir, 'd'), join(dir, 'i'), { virtualSize: sectors * 512 });
    const model = new SectorModel(sectors);
    const rnd = prng(5150);
    try {
      for (let k = 0; k < 300; k++) {
        const len = 1 + rnd(300);
        const off = rnd(sectors - len);
        if (rnd(4) === 0) {
          l.discard(off * 512, len * 512);
          model.discard(off * 512, len * 512);
        } else {
          const b = sectorData(k, off, len);
          l.write(off * 512, b);
          model.write(off * 512, b);
        }
      }
      const out = join(dir, 'c');
      await commitLayerToFile(l, out, { uuid: U });
      const ra = new FileRandomAccess(out);
      try {
        const sealed = openSealedLayer(ra);
        assert.ok(sealed.read(0, sectors * 512).buf.equals(model.read(0, sectors * 512)));
        assert.ok(l.read(0, sectors * 512).buf.equals(model.read(0, sectors * 512)));
      } finally {
        ra.close();
      }
    } finally {
      l.close();
    }
  });
});
