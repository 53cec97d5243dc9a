// Sealed LSMT layers: the golden samples from the reference tools open and read as their README says,
// and malformed files are refused with a FormatError naming the file and byte offset (never a hang or
// another kind of exception).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BufferRandomAccess, FileRandomAccess } from '../../src/overlaybd/io.js';
import { MAX_RO_INDEX_SIZE, openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { HT_SPACE, OFF_FLAGS, OFF_INDEX_OFFSET, OFF_INDEX_SIZE } from '../../src/overlaybd/lsmt-header.js';
import { type Mapping, decodeMapping, encodeMapping } from '../../src/overlaybd/segment.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { FormatError } from '../../src/util/errors.js';
import { repoRoot } from '../helpers/oracle.js';
import { prng } from './lsmt-fixtures.js';

const samples = join(repoRoot, 'testdata', 'overlaybd-samples');
const MiB = 1 << 20;
const commitBytes = readFileSync(join(samples, 'pattern.commit'));
const raw = readFileSync(join(samples, 'pattern.raw'));
const INDEX_AT = 208896;
const TRAILER_AT = commitBytes.length - HT_SPACE;

function extents(ms: readonly Mapping[]): number[][] {
  return ms.map((m) => [m.offset, m.length, m.moffset]);
}

function expectFormatError(buf: Buffer, offset: number, field?: string): FormatError {
  let caught: unknown;
  try {
    openSealedLayer(new BufferRandomAccess(buf, 'bad.lsmt'));
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof FormatError, `expected a FormatError, got ${String(caught)}`);
  assert.equal(caught.context.file, 'bad.lsmt');
  assert.equal(caught.context.offset, offset, caught.message);
  if (field !== undefined) assert.equal(caught.context.field, field, caught.message);
  assert.match(caught.message, /bad\.lsmt/);
  return caught;
}

function setU64(buf: Buffer, at: number, v: number): void {
  buf.writeUInt32LE(v % 2 ** 32, at);
  buf.writeUInt32LE(Math.floor(v / 2 ** 32), at + 4);
}

describe('golden sealed layers', () => {
  test('pattern.commit: 4 extents, reads pattern.raw then zeros', () => {
    const ra = new FileRandomAccess(join(samples, 'pattern.commit'));
    try {
      const l = openSealedLayer(ra);
      assert.equal(l.virtualSize, 1 << 30);
      assert.equal(l.uuid, 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE');
      assert.equal(l.parentUuid, '00000000-0000-0000-0000-000000000000');
      assert.equal(l.userTag, 'oracle sample');
      assert.equal(l.header.flags, 7);
      assert.equal(l.trailer.flags, 6);
      assert.equal(l.trailer.indexSize, 256);
      assert.deepEqual(extents(l.mappings()), [
        [0, 128, 8],
        [256, 8, 136],
        [512, 256, 144],
        [1024, 8, 400],
      ]);
      const r = l.read(0, 2 * MiB);
      assert.ok(r.buf.subarray(0, MiB).equals(raw));
      assert.ok(r.buf.subarray(MiB).every((b) => b === 0));
      // Unmapped ranges come back as holes.
      assert.deepEqual(r.holes[0], { offset: 128 * 512, length: 128 * 512 });
      const tail = l.read((1 << 30) - 4096, 4096);
      assert.ok(tail.buf.every((b) => b === 0));
      assert.deepEqual(tail.holes, [{ offset: (1 << 30) - 4096, length: 4096 }]);
    } finally {
      ra.close();
    }
  });

  test('pattern.sealed (close_seal form): 50 unmerged records, same content', () => {
    const ra = new FileRandomAccess(join(samples, 'pattern.sealed'));
    try {
      const l = openSealedLayer(ra);
      assert.equal(l.header.flags, 3);
      assert.equal(l.trailer.flags, 6);
      assert.equal(l.trailer.indexOffset, INDEX_AT);
      assert.equal(l.records.length, 50);
      assert.equal(l.uuid, '68527EE5-EDDF-4364-8243-F35708D06DDC');
      const r = l.read(0, 2 * MiB);
      assert.ok(r.buf.subarray(0, MiB).equals(raw));
      assert.ok(r.buf.subarray(MiB).every((b) => b === 0));
      // Random aligned windows agree with the raw image.
      const rnd = prng(11);
      for (let i = 0; i < 50; i++) {
        const len = (1 + rnd(64)) * 512;
        const off = rnd((MiB - len) / 512) * 512;
        assert.ok(l.read(off, len).buf.equals(raw.subarray(off, off + len)));
      }
    } finally {
      ra.close();
    }
  });

  test('ext4 layers from the userspace converter open through tar and ZFile', () => {
    for (const [name, size] of [
      ['ext4-layer0.commit.lz4.zfile.tar', 4767744],
      ['ext4-layer1.commit.lz4.zfile.tar', 4636672],
    ] as const) {
      const ra = new FileRandomAccess(join(samples, name));
      try {
        const { lsmt } = unwrapLayerBlob(ra);
        assert.equal(lsmt.size, size);
        const l = openSealedLayer(lsmt);
        assert.ok(l.records.length > 0);
        assert.equal(l.virtualSize, 64 * 2 ** 30);
        for (const m of l.records) l.read(m.offset * 512, Math.min(m.length, 64) * 512);
      } finally {
        ra.close();
      }
    }
  });

  test('an unpadded index and a zeroed record at the end of the data section are accepted', () => {
    const b = Buffer.from(commitBytes);
    setU64(b, TRAILER_AT + OFF_INDEX_SIZE, 5);
    encodeMapping({ offset: 5000, length: 10, moffset: INDEX_AT / 512, zeroed: true, tag: 9 }, b, INDEX_AT + 4 * 16);
    const l = openSealedLayer(new BufferRandomAccess(b, 'ok.lsmt'));
    assert.equal(l.records.length, 5);
    assert.equal(l.records[4]!.tag, 0, 'tags are reset on load');
    const r = l.read(4990 * 512, 30 * 512);
    assert.ok(r.buf.every((x) => x === 0));
    assert.deepEqual(r.holes, [
      { offset: 4990 * 512, length: 10 * 512 },
      { offset: 5010 * 512, length: 10 * 512 },
    ]);
  });
});

describe('malformed sealed layers', () => {
  test('empty and truncated files', () => {
    expectFormatError(Buffer.alloc(0), 0);
    expectFormatError(commitBytes.subarray(0, 5000), 5000);
    // Cut in the middle: the last 4 KiB are not a trailer.
    expectFormatError(commitBytes.subarray(0, 100000), 100000 - HT_SPACE, 'magic0');
    // Cut by one sector: the trailer is found at the wrong place.
    expectFormatError(commitBytes.subarray(0, commitBytes.length - 512), commitBytes.length - 512 - HT_SPACE, 'magic0');
  });

  test('wrong magic in header or trailer', () => {
    const b = Buffer.from(commitBytes);
    b[0] = 0x4d;
    expectFormatError(b, 0, 'magic0');
    const c = Buffer.from(commitBytes);
    c[TRAILER_AT + 12] ^= 0xff;
    expectFormatError(c, TRAILER_AT + 8, 'magic1');
    const z = Buffer.alloc(16384);
    expectFormatError(z, 0, 'magic0');
  });

  test('wrong flags: trailer marked as header, header without DATA, unsealed trailer', () => {
    const b = Buffer.from(commitBytes);
    b.writeUInt32LE(7, TRAILER_AT + OFF_FLAGS);
    expectFormatError(b, TRAILER_AT + OFF_FLAGS, 'flags');
    const c = Buffer.from(commitBytes);
    c.writeUInt32LE(5, OFF_FLAGS);
    expectFormatError(c, OFF_FLAGS, 'flags');
    const d = Buffer.from(commitBytes);
    d.writeUInt32LE(2, TRAILER_AT + OFF_FLAGS);
    expectFormatError(d, TRAILER_AT + OFF_FLAGS, 'flags');
  });

  test('index pointing past the end, or too large', () => {
    const b = Buffer.from(commitBytes);
    setU64(b, TRAILER_AT + OFF_INDEX_OFFSET, TRAILER_AT - 16 * 255);
    expectFormatError(b, TRAILER_AT + OFF_INDEX_OFFSET, 'index_offset');
    const c = Buffer.from(commitBytes);
    setU64(c, TRAILER_AT + OFF_INDEX_OFFSET, 2 ** 40);
    expectFormatError(c, TRAILER_AT + OFF_INDEX_OFFSET, 'index_offset');
    const d = Buffer.from(commitBytes);
    setU64(d, TRAILER_AT + OFF_INDEX_SIZE, MAX_RO_INDEX_SIZE + 1);
    expectFormatError(d, TRAILER_AT + OFF_INDEX_SIZE, 'index_size');
    const e = Buffer.from(commitBytes);
    e.writeUInt32LE(0xffffffff, TRAILER_AT + OFF_INDEX_SIZE + 4);
    expectFormatError(e, TRAILER_AT + OFF_INDEX_SIZE, 'index_size');
  });

  test('misordered and overlapping records', () => {
    const b = Buffer.from(commitBytes);
    const r0 = Buffer.from(b.subarray(INDEX_AT, INDEX_AT + 16));
    b.copy(b, INDEX_AT, INDEX_AT + 16, INDEX_AT + 32);
    r0.copy(b, INDEX_AT + 16);
    expectFormatError(b, INDEX_AT + 16, 'index');
    const c = Buffer.from(commitBytes);
    const m1 = decodeMapping(c, INDEX_AT + 16);
    encodeMapping({ ...m1, offset: 127 }, c, INDEX_AT + 16);
    expectFormatError(c, INDEX_AT + 16, 'index');
  });

  test('records mapping outside the data section', () => {
    const b = Buffer.from(commitBytes);
    encodeMapping({ offset: 1024, length: 8, moffset: 401, zeroed: false, tag: 0 }, b, INDEX_AT + 48);
    expectFormatError(b, INDEX_AT + 48, 'moffset');
    const c = Buffer.from(commitBytes);
    encodeMapping({ offset: 0, length: 128, moffset: 7, zeroed: false, tag: 0 }, c, INDEX_AT);
    expectFormatError(c, INDEX_AT, 'moffset');
    const d = Buffer.from(commitBytes);
    encodeMapping({ offset: 1024, length: 8, moffset: 409, zeroed: true, tag: 0 }, d, INDEX_AT + 48);
    expectFormatError(d, INDEX_AT + 48, 'moffset');
  });

  test('random corruption and truncation: opens or FormatError, nothing else', () => {
    const rnd = prng(2024);
    const regions = [
      [0, 400],
      [INDEX_AT, INDEX_AT + 4 * 16],
      [TRAILER_AT, TRAILER_AT + 400],
    ] as const;
    let refused = 0;
    for (let i = 0; i < 600; i++) {
      const b = Buffer.from(commitBytes);
      for (let k = 0; k <= rnd(3); k++) {
        const [lo, hi] = regions[rnd(3)]!;
        b[lo + rnd(hi - lo)] = rnd(256);
      }
      const cut = rnd(4) === 0 ? rnd(b.length) : b.length;
      try {
        const l = openSealedLayer(new BufferRandomAccess(b.subarray(0, cut), 'fuzz.lsmt'));
        // Records beyond the virtual size are legal (and never read by a device).
        for (const m of l.records.slice(0, 8)) if ((m.offset + m.length) * 512 <= l.virtualSize) l.read(m.offset * 512, Math.min(m.length, 16) * 512);
      } catch (err) {
        assert.ok(err instanceof FormatError, `iteration ${i}: ${String(err)}`);
        assert.equal(typeof err.context.offset, 'number');
        refused++;
      }
    }
    assert.ok(refused > 0);
  });
});
