// The append-only writable layer: reads the golden pair, writes pairs the reference tools accept
// (same header bytes as `overlaybd-create`), agrees with a per-sector model, and recovers from a pair
// cut at any byte: every complete record survives, nothing throws.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { HT_SPACE, OFF_UUID, parseHeaderTrailer } from '../../src/overlaybd/lsmt-header.js';
import { type Mapping, RECORD_SIZE, decodeMapping, isInvalidRecord } from '../../src/overlaybd/segment.js';
import { ObdkitError, FormatError } from '../../src/util/errors.js';
import { obdCheck, repoRoot, requireOracle, runOracleTool } from '../helpers/oracle.js';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { type Cell, SectorModel, prng, sectorData, tempDir } from './lsmt-fixtures.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
const MiB = 1 << 20;
let tmp: ReturnType<typeof tempDir>;
before(() => {
  tmp = tempDir('rw-layer');
});
after(() => tmp.cleanup());

/** Checks a layer's full view (bytes and which sectors are holes) against the model. */
function assertMatches(layer: RwLayer, model: SectorModel, what: string): void {
  const size = model.sectors * 512;
  const r = layer.read(0, size);
  assert.ok(r.buf.equals(model.read(0, size)), `${what}: bytes differ`);
  const holes = new Array<boolean>(model.sectors).fill(false);
  for (const h of r.holes) for (let s = h.offset / 512; s < (h.offset + h.length) / 512; s++) holes[s] = true;
  for (let s = 0; s < model.sectors; s++) {
    if (holes[s] !== (model.cells[s] === undefined)) assert.fail(`${what}: sector ${s} hole=${holes[s]} but model has ${describeCell(model.cells[s])}`);
  }
}

function writeAt(path: string, position: number, buf: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, buf, 0, buf.length, position);
  } finally {
    closeSync(fd);
  }
}

function describeCell(c: Cell): string {
  return c === undefined ? 'a hole' : c === 'zero' ? 'zeroed' : 'data';
}

type Op = { kind: 'write'; offset: number; buf: Buffer } | { kind: 'discard'; offset: number; length: number };

function randomOps(seed: number, sectors: number, count: number, maxLen: number): Op[] {
  const rnd = prng(seed);
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + rnd(maxLen);
    const off = rnd(sectors - len);
    ops.push(rnd(6) === 0 ? { kind: 'discard', offset: off * 512, length: len * 512 } : { kind: 'write', offset: off * 512, buf: sectorData(seed * 1000 + i, off, len) });
  }
  return ops;
}

function apply(ops: readonly Op[], layer: RwLayer | undefined, model: SectorModel): void {
  for (const op of ops) {
    if (op.kind === 'write') {
      layer?.write(op.offset, op.buf);
      model.write(op.offset, op.buf);
    } else {
      layer?.discard(op.offset, op.length);
      model.discard(op.offset, op.length);
    }
  }
}

describe('golden writable pair', () => {
  test('pattern.rw reads pattern.raw; 50 records; uuid from the index header', () => {
    const l = RwLayer.open(join(samples, 'pattern.rw.data'), join(samples, 'pattern.rw.index'), { readOnly: true });
    try {
      assert.equal(l.uuid, '68527EE5-EDDF-4364-8243-F35708D06DDC');
      assert.equal(l.virtualSize, 1 << 30);
      assert.equal(l.recordCount, 50);
      assert.deepEqual(l.recovery, { partialIndexBytes: 0, droppedRecords: 0, partialDataBytes: 0 });
      const raw = readFileSync(join(samples, 'pattern.raw'));
      const r = l.read(0, 2 * MiB);
      assert.ok(r.buf.subarray(0, MiB).equals(raw));
      assert.ok(r.buf.subarray(MiB).every((b) => b === 0));
      assert.throws(() => l.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof ObdkitError && e.code === 'EROFS');
    } finally {
      l.close();
    }
  });
});

describe('RwLayer writes', () => {
  test('headers match what overlaybd-create writes, except the random uuid', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const dir = join(tmp.path, 'create');
    mkdirSync(dir);
    const r = await runOracleTool(oracle, 'overlaybd-create', [join(dir, 'ref.data'), join(dir, 'ref.index'), '1']);
    assert.equal(r.exitCode, 0, r.output);
    const ours = RwLayer.create(join(dir, 'our.data'), join(dir, 'our.index'), { virtualSize: 1 << 30 });
    ours.close();
    for (const kind of ['data', 'index']) {
      const ref = readFileSync(join(dir, `ref.${kind}`));
      const got = readFileSync(join(dir, `our.${kind}`));
      assert.equal(got.length, ref.length);
      assert.equal(got.length, HT_SPACE);
      const refUuid = parseHeaderTrailer(ref, kind, 0).uuid;
      const ourUuid = parseHeaderTrailer(got, kind, 0).uuid;
      assert.notEqual(refUuid, ourUuid);
      // Identical once the uuid field (36 chars + NUL) is blanked.
      ref.fill(0, OFF_UUID, OFF_UUID + 37);
      got.fill(0, OFF_UUID, OFF_UUID + 37);
      assert.ok(got.equals(ref), `${kind} header differs from overlaybd-create's`);
    }
    // The reference pair opens here; ours is opened by the reference tools in commit.test.
    const l = RwLayer.open(join(dir, 'ref.data'), join(dir, 'ref.index'));
    assert.equal(l.recordCount, 0);
    l.close();
  });

  test('create refuses existing files and keeps the parent uuid', () => {
    const d = join(tmp.path, 'excl.data');
    const i = join(tmp.path, 'excl.index');
    RwLayer.create(d, i, { virtualSize: MiB, parentUuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' }).close();
    assert.throws(() => RwLayer.create(d, i, { virtualSize: MiB }), /EEXIST/);
    const l = RwLayer.open(d, i);
    assert.equal(l.parentUuid, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
    l.close();
  });

  test('sparse pairs from overlaybd-create -s open read-only, mapping their allocated extents', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const sd = join(tmp.path, 'sparse.data');
    const si = join(tmp.path, 'sparse.index');
    const r = await runOracleTool(oracle, 'overlaybd-create', ['-s', sd, si, '1']);
    assert.equal(r.exitCode, 0, r.output);
    assert.equal(statSync(sd).size, HT_SPACE + (1 << 30));
    assert.throws(() => RwLayer.open(sd, si), (e: unknown) => e instanceof ObdkitError && e.code === 'ENOTSUP');
    const model = new SectorModel(32768);
    const a = sectorData(1, 8, 24);
    const b = sectorData(2, 20000, 9000 * 2);
    writeAt(sd, HT_SPACE + 8 * 512, a);
    writeAt(sd, HT_SPACE + 20000 * 512, b);
    model.write(8 * 512, a);
    model.write(20000 * 512, b);
    const l = RwLayer.open(sd, si, { readOnly: true });
    try {
      assert.equal(l.virtualSize, 1 << 30);
      const ms = l.mappings();
      assert.ok(ms.every((m) => !m.zeroed && m.length <= 16383 && m.moffset === m.offset + 8));
      // Allocation is per filesystem block, so sectors around the writes may be mapped (as zeros):
      // compare bytes only.
      assert.ok(l.read(0, 32768 * 512).buf.equals(model.read(0, 32768 * 512)));
      assert.throws(() => l.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof ObdkitError && e.code === 'EROFS');
    } finally {
      l.close();
    }
  });

  test('writes, overwrites and discards agree with a per-sector model, before and after reopen', () => {
    const sectors = 16384 * 3;
    const d = join(tmp.path, 'model.data');
    const i = join(tmp.path, 'model.index');
    const l = RwLayer.create(d, i, { virtualSize: sectors * 512 });
    const model = new SectorModel(sectors);
    try {
      // A write larger than 4 MiB (three records) and a discard larger than 16383 sectors (two records).
      apply(
        [
          { kind: 'write', offset: 512, buf: sectorData(1, 1, 9000 * 2 + 5) },
          { kind: 'discard', offset: 4096, length: 17000 * 512 },
          ...randomOps(5, sectors, 400, 40),
        ],
        l,
        model,
      );
      assertMatches(l, model, 'live');
      assert.throws(() => l.write(100, Buffer.alloc(512)), RangeError);
      assert.throws(() => l.write(0, Buffer.alloc(100)), RangeError);
      assert.throws(() => l.write(sectors * 512, Buffer.alloc(512)), RangeError);
      l.fsync();
    } finally {
      l.close();
    }
    const idx = readFileSync(i);
    const first = [0, 1, 2, 3, 4].map((k) => decodeMapping(idx, HT_SPACE + k * RECORD_SIZE));
    assert.deepEqual(
      first.map((m) => [m.offset, m.length, m.moffset, m.zeroed]),
      [
        [1, 8192, 8, false],
        [8193, 8192, 8200, false],
        [16385, 1621, 16392, false],
        [8, 16383, 18013, true],
        [16391, 617, 18013, true],
      ],
    );
    const again = RwLayer.open(d, i, { readOnly: true });
    try {
      assertMatches(again, model, 'reopened');
      const ms = again.mappings();
      for (let k = 1; k < ms.length; k++) assert.ok(ms[k - 1]!.offset + ms[k - 1]!.length <= ms[k]!.offset);
    } finally {
      again.close();
    }
  });
});

describe('RwLayer.seal (close_seal)', () => {
  test('matches overlaybd-commit --seal except the unspecified padding, and the reference reads it', async (t: TestContext) => {
    const oracle = requireOracle(t);
    if (!oracle) return;
    const dir = join(tmp.path, 'seal');
    mkdirSync(dir);
    const sectors = 40000;
    const model = new SectorModel(sectors);
    const l = RwLayer.create(join(dir, 'our.data'), join(dir, 'our.index'), { virtualSize: sectors * 512, parentUuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' });
    try {
      apply([{ kind: 'write', offset: 0, buf: sectorData(3, 0, 20000) }, ...randomOps(8, sectors, 300, 64)], l, model);
    } finally {
      l.close();
    }
    copyFileSync(join(dir, 'our.data'), join(dir, 'ref.data'));
    copyFileSync(join(dir, 'our.index'), join(dir, 'ref.index'));
    const r = await runOracleTool(oracle, 'overlaybd-commit', ['--seal', join(dir, 'ref.data'), join(dir, 'ref.index')]);
    assert.equal(r.exitCode, 0, r.output);
    const again = RwLayer.open(join(dir, 'our.data'), join(dir, 'our.index'));
    const count = again.recordCount;
    const indexOffset = again.data.size;
    again.seal();
    assert.throws(() => again.write(0, Buffer.alloc(512)), (e: unknown) => e instanceof ObdkitError && e.code === 'ECLOSED');
    const ours = readFileSync(join(dir, 'our.data'));
    const ref = readFileSync(join(dir, 'ref.data'));
    assert.equal(ours.length, ref.length);
    // The bytes between the last record and the next sector boundary are whatever the reference had in memory.
    const padFrom = indexOffset + count * RECORD_SIZE;
    const padTo = Math.ceil(padFrom / 512) * 512;
    ours.fill(0, padFrom, padTo);
    ref.fill(0, padFrom, padTo);
    assert.ok(ours.equals(ref), 'sealed files differ');
    const ra = new FileRandomAccess(join(dir, 'our.data'));
    try {
      const sealed = openSealedLayer(ra);
      assert.equal(sealed.trailer.indexSize, count);
      assert.equal(sealed.parentUuid, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
      const size = sectors * 512;
      assert.ok(sealed.read(0, size).buf.equals(model.read(0, size)));
    } finally {
      ra.close();
    }
    const verdict = await obdCheck(oracle, join(dir, 'our.data'));
    assert.equal(verdict.result, 'VALID', verdict.output);
  });
});

describe('RwLayer recovery', () => {
  const sectors = 8192;
  const ops = randomOps(77, sectors, 80, 16);
  let dataBytes: Buffer;
  let indexBytes: Buffer;
  let records: Mapping[];

  before(() => {
    const l = RwLayer.create(join(tmp.path, 'rec.data'), join(tmp.path, 'rec.index'), { virtualSize: sectors * 512 });
    try {
      apply(ops, l, new SectorModel(sectors));
    } finally {
      l.close();
    }
    dataBytes = readFileSync(join(tmp.path, 'rec.data'));
    indexBytes = readFileSync(join(tmp.path, 'rec.index'));
    records = [];
    for (let p = HT_SPACE; p < indexBytes.length; p += RECORD_SIZE) records.push(decodeMapping(indexBytes, p));
    assert.equal(records.length, ops.length);
  });

  /** The model after replaying only the operations whose record survives. */
  function expected(keep: (k: number) => boolean): SectorModel {
    const m = new SectorModel(sectors);
    apply(
      ops.filter((_, k) => keep(k)),
      undefined,
      m,
    );
    return m;
  }

  function cutPair(name: string, dataLen: number, indexLen: number): { d: string; i: string } {
    const d = join(tmp.path, `${name}.data`);
    const i = join(tmp.path, `${name}.index`);
    writeFileSync(d, dataBytes.subarray(0, dataLen));
    writeFileSync(i, indexBytes.subarray(0, indexLen));
    return { d, i };
  }

  test('index cut at every byte of the last records and at random places', () => {
    const rnd = prng(3);
    const cuts = new Set<number>();
    for (let p = indexBytes.length - 4 * RECORD_SIZE; p <= indexBytes.length; p++) cuts.add(p);
    for (let k = 0; k < 30; k++) cuts.add(HT_SPACE + rnd(indexBytes.length - HT_SPACE + 1));
    cuts.add(HT_SPACE);
    for (const cut of cuts) {
      const { d, i } = cutPair('icut', dataBytes.length, cut);
      const l = RwLayer.open(d, i, { readOnly: true });
      try {
        const kept = Math.floor((cut - HT_SPACE) / RECORD_SIZE);
        assert.equal(l.recovery.partialIndexBytes, (cut - HT_SPACE) % RECORD_SIZE);
        assertMatches(l, expected((k) => k < kept), `index cut at ${cut}`);
      } finally {
        l.close();
      }
    }
  });

  test('data cut at random places and at record boundaries: records beyond EOF dropped', () => {
    const rnd = prng(4);
    const cuts = new Set<number>([HT_SPACE, dataBytes.length - 1, dataBytes.length - 512]);
    for (let k = 0; k < 30; k++) cuts.add(HT_SPACE + rnd(dataBytes.length - HT_SPACE));
    for (const m of records.slice(-5)) if (!m.zeroed) for (const delta of [-1, 0, 1]) cuts.add((m.moffset + m.length) * 512 + delta);
    for (const cut of cuts) {
      if (cut > dataBytes.length || cut < HT_SPACE) continue;
      const { d, i } = cutPair('dcut', cut, indexBytes.length);
      const l = RwLayer.open(d, i, { readOnly: true });
      try {
        const end = Math.floor(cut / 512);
        const keep = (k: number): boolean => {
          const m = records[k]!;
          return m.zeroed ? m.moffset <= end : m.moffset + m.length <= end;
        };
        const dropped = records.filter((_, k) => !keep(k)).length;
        assert.equal(l.recovery.droppedRecords, dropped);
        assertMatches(l, expected(keep), `data cut at ${cut}`);
      } finally {
        l.close();
      }
    }
  });

  test('reopening a cut pair for writing repairs it; dropped records never come back', () => {
    const lastData = records.map((m, k) => [m, k] as const).filter(([m]) => !m.zeroed).at(-3)!;
    const dataCut = lastData[0].moffset * 512 + 100; // inside a record's data, not sector aligned
    const indexCut = indexBytes.length - 7; // torn last record
    const { d, i } = cutPair('repair', dataCut, indexCut);
    const end = Math.floor(dataCut / 512);
    const keep = (k: number): boolean => {
      const m = records[k]!;
      if (k >= records.length - 1) return false;
      return m.zeroed ? m.moffset <= end : m.moffset + m.length <= end;
    };
    const model = expected(keep);
    const l = RwLayer.open(d, i);
    try {
      assert.ok(l.recovery.droppedRecords >= 2, JSON.stringify({ rec: l.recovery, tail: records.slice(-4), end }));
      assert.equal(l.recovery.partialIndexBytes, RECORD_SIZE - 7);
      assert.equal(statSync(d).size, end * 512, 'torn data sector cut off');
      assert.equal((statSync(i).size - HT_SPACE) % RECORD_SIZE, 0, 'torn record cut off');
      assertMatches(l, model, 'repaired');
      // Append enough to cover the sectors the dropped records pointed at.
      const more = sectorData(999, 100, 200);
      l.write(100 * 512, more);
      model.write(100 * 512, more);
      assertMatches(l, model, 'appended');
    } finally {
      l.close();
    }
    const idx = readFileSync(i);
    let invalid = 0;
    for (let p = HT_SPACE; p < idx.length; p += RECORD_SIZE) if (isInvalidRecord(idx, p)) invalid++;
    assert.ok(invalid >= 2, 'dropped records are overwritten with invalid records');
    const again = RwLayer.open(d, i, { readOnly: true });
    try {
      assert.equal(again.recovery.droppedRecords, 0);
      assertMatches(again, model, 'reopened after repair');
    } finally {
      again.close();
    }
  });

  test('headers cut short or damaged are FormatErrors, not crashes', () => {
    for (const [dl, il] of [
      [0, indexBytes.length],
      [100, indexBytes.length],
      [dataBytes.length, 4095],
      [dataBytes.length, 0],
    ] as const) {
      const { d, i } = cutPair('hdr', dl, il);
      assert.throws(() => RwLayer.open(d, i, { readOnly: true }), FormatError, `data ${dl} index ${il}`);
    }
    // The data file given as the index file (and the other way round): wrong flags.
    const { d, i } = cutPair('swap', dataBytes.length, indexBytes.length);
    assert.throws(() => RwLayer.open(d, d, { readOnly: true }), (e: unknown) => e instanceof FormatError && e.context.field === 'flags');
    assert.throws(() => RwLayer.open(i, i, { readOnly: true }), (e: unknown) => e instanceof FormatError && e.context.field === 'flags');
  });
});
