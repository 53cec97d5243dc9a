// Index records, UUID strings, the LSMT header block and the in-memory index (SegmentIndex), checked
// against golden bytes from the reference tools and against a naive per-sector model.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  INVALID_RECORD,
  MAX_LENGTH,
  MAX_OFFSET,
  type Mapping,
  decodeMapping,
  encodeMapping,
  isInvalidRecord,
} from '../../src/overlaybd/segment.js';
import { NULL_UUID, isNullUuid, isValidUuid, normalizeUuid, randomUuid, uuidFromBytes, uuidToBytes } from '../../src/overlaybd/uuid.js';
import {
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  HT_SPACE,
  encodeHeaderTrailer,
  isDataFile,
  isHeader,
  isSealed,
  parseHeaderTrailer,
} from '../../src/overlaybd/lsmt-header.js';
import { SegmentIndex, lookupSorted } from '../../src/overlaybd/segment-index.js';
import { FormatError } from '../../src/util/errors.js';
import { repoRoot } from '../helpers/oracle.js';
import { prng } from './lsmt-fixtures.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');

describe('segment records', () => {
  test('the invalid (padding) record has the documented bytes', () => {
    assert.equal(INVALID_RECORD.toString('hex'), 'ffffffffffff03000000000000000000');
    assert.ok(isInvalidRecord(INVALID_RECORD));
    assert.equal(decodeMapping(INVALID_RECORD).offset, MAX_OFFSET);
  });

  test('decodes the golden pattern.commit index', () => {
    const buf = readFileSync(join(samples, 'pattern.commit'));
    const got = [0, 1, 2, 3].map((i) => decodeMapping(buf, 208896 + i * 16));
    assert.deepEqual(
      got.map((m) => [m.offset, m.length, m.moffset, m.zeroed, m.tag]),
      [
        [0, 128, 8, false, 0],
        [256, 8, 136, false, 0],
        [512, 256, 144, false, 0],
        [1024, 8, 400, false, 0],
      ],
    );
    assert.ok(isInvalidRecord(buf, 208896 + 4 * 16));
    for (let i = 0; i < 4; i++) assert.ok(encodeMapping(got[i]!).equals(buf.subarray(208896 + i * 16, 208912 + i * 16)));
  });

  test('round-trips extreme field values without BigInt', () => {
    const cases: Mapping[] = [
      { offset: MAX_OFFSET - 1, length: MAX_LENGTH, moffset: 2 ** 53 - 1, zeroed: true, tag: 255 },
      { offset: 2 ** 32, length: 1, moffset: 2 ** 32 + 7, zeroed: false, tag: 3 },
      { offset: 2 ** 32 - 1, length: 16382, moffset: 2 ** 40, zeroed: true, tag: 0 },
      { offset: 0, length: 0, moffset: 0, zeroed: false, tag: 0 },
    ];
    for (const m of cases) {
      const b = encodeMapping(m);
      assert.equal(b.length, 16);
      assert.deepEqual(decodeMapping(b), m);
      // Cross-check the bit layout with BigInt arithmetic.
      const w0 = b.readBigUInt64LE(0);
      const w1 = b.readBigUInt64LE(8);
      assert.equal(w0 & ((1n << 50n) - 1n), BigInt(m.offset));
      assert.equal(w0 >> 50n, BigInt(m.length));
      assert.equal(w1 & ((1n << 55n) - 1n), BigInt(m.moffset));
      assert.equal((w1 >> 55n) & 1n, m.zeroed ? 1n : 0n);
      assert.equal(w1 >> 56n, BigInt(m.tag));
    }
  });
});

describe('uuid', () => {
  test('validates, parses and prints upper-case', () => {
    const u = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
    assert.ok(isValidUuid(u));
    assert.equal(normalizeUuid(u), u.toUpperCase());
    assert.equal(uuidToBytes(u).toString('hex'), 'aaaaaaaabbbbccccddddeeeeeeeeeeee');
    assert.equal(uuidFromBytes(Buffer.alloc(16)), NULL_UUID);
    assert.ok(isNullUuid(NULL_UUID));
    for (const bad of ['', 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeee', 'aaaaaaaabbbb-cccc-dddd-eeeeeeeeeeeee', 'gaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', `${u}0`]) {
      assert.equal(isValidUuid(bad), false, bad);
      assert.throws(() => uuidToBytes(bad));
    }
    const r = randomUuid();
    assert.ok(isValidUuid(r));
    assert.equal(r, r.toUpperCase());
    assert.equal(r[14], '4');
  });
});

describe('LSMT header/trailer', () => {
  test('parses the golden trailer and re-encodes it byte for byte', () => {
    const buf = readFileSync(join(samples, 'pattern.commit'));
    const at = buf.length - HT_SPACE;
    const t = parseHeaderTrailer(buf.subarray(at), 'pattern.commit', at);
    assert.equal(t.flags, FLAG_DATA | FLAG_SEALED);
    assert.ok(!isHeader(t) && isDataFile(t) && isSealed(t));
    assert.equal(t.indexOffset, 208896);
    assert.equal(t.indexSize, 256);
    assert.equal(t.virtualSize, 1 << 30);
    assert.equal(t.uuid, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
    assert.equal(t.parentUuid, NULL_UUID);
    assert.equal(t.userTag.toString(), 'oracle sample');
    const again = encodeHeaderTrailer({ ...t, userTag: t.userTag });
    assert.ok(again.equals(buf.subarray(at)));
    const h = parseHeaderTrailer(buf.subarray(0, HT_SPACE), 'pattern.commit', 0);
    assert.equal(h.flags, FLAG_HEADER | FLAG_DATA | FLAG_SEALED);
    assert.ok(encodeHeaderTrailer({ ...h }).equals(buf.subarray(0, HT_SPACE)));
  });

  test('wrong magic and truncation are FormatErrors naming file, offset and field', () => {
    const good = encodeHeaderTrailer({ flags: FLAG_HEADER, virtualSize: 512 });
    const bad = Buffer.from(good);
    bad[3] = 0;
    assert.throws(
      () => parseHeaderTrailer(bad, 'f.lsmt', 8192),
      (e: unknown) => e instanceof FormatError && e.context.file === 'f.lsmt' && e.context.offset === 8192 && e.context.field === 'magic0',
    );
    const bad1 = Buffer.from(good);
    bad1[20] ^= 1;
    assert.throws(() => parseHeaderTrailer(bad1, 'f', 0), (e: unknown) => e instanceof FormatError && e.context.offset === 8 && e.context.field === 'magic1');
    assert.throws(() => parseHeaderTrailer(good.subarray(0, 100), 'f', 0), (e: unknown) => e instanceof FormatError && e.context.offset === 100);
  });

  test('user tags longer than 256 bytes are refused', () => {
    assert.throws(() => encodeHeaderTrailer({ flags: 0, virtualSize: 0, userTag: 'x'.repeat(257) }), RangeError);
    const b = encodeHeaderTrailer({ flags: 0, virtualSize: 0, userTag: 'y'.repeat(256) });
    assert.equal(parseHeaderTrailer(b, 'f', 0).userTag.length, 256);
  });
});

/** Per-sector model: what each sector maps to after replaying inserts newest-wins. */
class NaiveIndex {
  readonly cells: Array<{ zeroed: boolean; msector: number; tag: number } | undefined>;
  constructor(size: number) {
    this.cells = new Array(size).fill(undefined);
  }
  insert(m: Mapping): void {
    for (let i = 0; i < m.length; i++) this.cells[m.offset + i] = { zeroed: m.zeroed, msector: m.zeroed ? m.moffset : m.moffset + i, tag: m.tag };
  }
}

function expand(records: Iterable<Mapping>, size: number): NaiveIndex['cells'] {
  const out: NaiveIndex['cells'] = new Array(size).fill(undefined);
  for (const m of records) for (let i = 0; i < m.length; i++) out[m.offset + i] = { zeroed: m.zeroed, msector: m.zeroed ? m.moffset : m.moffset + i, tag: m.tag };
  return out;
}

function checkInvariants(idx: SegmentIndex): Mapping[] {
  const all = idx.toArray();
  assert.equal(all.length, idx.size);
  for (let i = 0; i < all.length; i++) {
    assert.ok(all[i]!.length > 0);
    if (i) assert.ok(all[i - 1]!.offset + all[i - 1]!.length <= all[i]!.offset, `records ${i - 1} and ${i} overlap or are misordered`);
  }
  return all;
}

describe('SegmentIndex', () => {
  test('overlay semantics: left keeps moffset, right moves it (unless zeroed)', () => {
    const idx = new SegmentIndex();
    idx.insert({ offset: 0, length: 100, moffset: 1000, zeroed: false, tag: 0 });
    idx.insert({ offset: 40, length: 10, moffset: 5000, zeroed: false, tag: 0 });
    assert.deepEqual(
      idx.toArray().map((m) => [m.offset, m.length, m.moffset]),
      [
        [0, 40, 1000],
        [40, 10, 5000],
        [50, 50, 1050],
      ],
    );
    idx.insert({ offset: 200, length: 100, moffset: 77, zeroed: true, tag: 0 });
    idx.insert({ offset: 250, length: 10, moffset: 9, zeroed: false, tag: 0 });
    assert.deepEqual(
      idx.toArray().slice(3).map((m) => [m.offset, m.length, m.moffset, m.zeroed]),
      [
        [200, 50, 77, true],
        [250, 10, 9, false],
        [260, 40, 77, true],
      ],
    );
    // One insert covering several records and cutting both ends.
    idx.insert({ offset: 30, length: 240, moffset: 3, zeroed: false, tag: 0 });
    assert.deepEqual(
      idx.toArray().map((m) => [m.offset, m.length, m.moffset, m.zeroed]),
      [
        [0, 30, 1000, false],
        [30, 240, 3, false],
        [270, 30, 77, true],
      ],
    );
    assert.deepEqual(
      idx.lookup(20, 20).map((m) => [m.offset, m.length, m.moffset]),
      [
        [20, 10, 1020],
        [30, 10, 3],
      ],
    );
    assert.deepEqual(idx.lookup(300, 50), []);
  });

  test('random inserts across many chunks agree with a per-sector model', () => {
    const SIZE = 120000;
    const rnd = prng(7);
    const idx = new SegmentIndex();
    const model = new NaiveIndex(SIZE);
    for (let i = 0; i < 30000; i++) {
      const big = rnd(500) === 0;
      const length = 1 + (big ? rnd(8000) : rnd(12));
      const offset = rnd(SIZE - length);
      const m: Mapping = { offset, length, moffset: 8 + rnd(1 << 30), zeroed: rnd(7) === 0, tag: rnd(3) };
      idx.insert(m);
      model.insert(m);
      if (i % 5000 === 4999) assert.deepEqual(expand(checkInvariants(idx), SIZE), model.cells);
    }
    assert.ok(idx.size > 2048, `only ${idx.size} records: the test should span several chunks`);
    // Lookups return exactly the model's view of a range, trimmed.
    for (let k = 0; k < 300; k++) {
      const len = 1 + rnd(3000);
      const off = rnd(SIZE - len);
      const got = idx.lookup(off, len);
      const cells = expand(got, SIZE).slice(off, off + len);
      assert.deepEqual(cells, model.cells.slice(off, off + len));
      for (const m of got) assert.ok(m.offset >= off && m.offset + m.length <= off + len);
    }
    const sorted = idx.toArray();
    for (let k = 0; k < 100; k++) {
      const len = 1 + rnd(500);
      const off = rnd(SIZE - len);
      assert.deepEqual(lookupSorted(sorted, off, len), idx.lookup(off, len));
    }
  });

  test('sequential appends stay in order and lookups work at chunk edges', () => {
    const idx = new SegmentIndex();
    for (let i = 0; i < 5000; i++) idx.insert({ offset: i * 8, length: 8, moffset: 8 + i * 8, zeroed: false, tag: 0 });
    assert.equal(idx.size, 5000);
    const got = idx.lookup(1023 * 8 + 4, 16);
    assert.deepEqual(
      got.map((m) => [m.offset, m.length, m.moffset]),
      [
        [1023 * 8 + 4, 4, 8 + 1023 * 8 + 4],
        [1024 * 8, 8, 8 + 1024 * 8],
        [1025 * 8, 4, 8 + 1025 * 8],
      ],
    );
    // A discard spanning several chunks removes whole chunks and trims at both ends.
    idx.insert({ offset: 4, length: 16379, moffset: 0, zeroed: true, tag: 0 });
    assert.deepEqual(
      checkInvariants(idx)
        .slice(0, 4)
        .map((m) => [m.offset, m.length, m.moffset, m.zeroed]),
      [
        [0, 4, 8, false],
        [4, 16379, 0, true],
        [16383, 1, 8 + 16383, false],
        [16384, 8, 8 + 16384, false],
      ],
    );
    assert.equal(idx.size, 5000 - 2048 + 3);
    assert.throws(() => idx.insert({ offset: 0, length: 16384, moffset: 0, zeroed: true, tag: 0 }), RangeError);
  });
});
