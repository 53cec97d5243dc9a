// The LSMT index record: one mapping of a run of logical sectors to sectors of a layer file, and its
// 16-byte on-disk form (two little-endian u64 bit-field words). Everything here is in 512-byte sectors.
// segment-index.ts keeps sets of these; lsmt-file.ts, rw-layer.ts and commit.ts read and write them.
//
// Bit layout: word0 = offset (50 bits) | length (14 bits); word1 = moffset (55) | zeroed (1) | tag (8).
// It is decoded through 32-bit halves so no BigInt is needed: offsets stay below 2^50 and moffsets
// below 2^53 in practice, both exact in a JS number.
export const SECTOR_SIZE = 512;
export const SECTOR_SHIFT = 9;
export const RECORD_SIZE = 16;

export const MAX_OFFSET = 2 ** 50 - 1;
/** Offset value that marks a padding record; readers drop every record carrying it. */
export const INVALID_OFFSET = MAX_OFFSET;
export const MAX_LENGTH = 2 ** 14 - 1; // 16383 sectors
export const MAX_MOFFSET = 2 ** 55 - 1;
export const MAX_TAG = 255;

const TWO32 = 2 ** 32;

export interface Mapping {
  /** First logical sector. */
  offset: number;
  /** Number of sectors, 1..MAX_LENGTH in a stored record. */
  length: number;
  /** First sector inside the layer file (data records); meaningless but range-checked for zeroed ones. */
  moffset: number;
  /** Reads as zeros and hides lower layers; has no data. */
  zeroed: boolean;
  /** Runtime layer number; ignored on read, written as 0. */
  tag: number;
}

export function mappingEnd(m: Mapping): number {
  return m.offset + m.length;
}

/** End of the mapped file range: zeroed records occupy no file space. */
export function mappingMend(m: Mapping): number {
  return m.zeroed ? m.moffset : m.moffset + m.length;
}

/** The part of `m` from logical sector `x` (>= m.offset) on; data records move their file offset along. */
export function forwardMappingTo(m: Mapping, x: number): Mapping {
  const delta = x - m.offset;
  return { offset: x, length: m.length - delta, moffset: m.zeroed ? m.moffset : m.moffset + delta, zeroed: m.zeroed, tag: m.tag };
}

/** The part of `m` before logical sector `x` (> m.offset). */
export function backwardMappingTo(m: Mapping, x: number): Mapping {
  return { offset: m.offset, length: x - m.offset, moffset: m.moffset, zeroed: m.zeroed, tag: m.tag };
}

export function encodeMapping(m: Mapping, out: Buffer = Buffer.alloc(RECORD_SIZE), pos = 0): Buffer {
  out.writeUInt32LE(m.offset % TWO32, pos);
  out.writeUInt32LE((Math.floor(m.offset / TWO32) | (m.length << 18)) >>> 0, pos + 4);
  out.writeUInt32LE(m.moffset % TWO32, pos + 8);
  out.writeUInt32LE((Math.floor(m.moffset / TWO32) | ((m.zeroed ? 1 : 0) << 23) | (m.tag << 24)) >>> 0, pos + 12);
  return out;
}

export function decodeMapping(buf: Buffer, pos = 0): Mapping {
  const w0 = buf.readUInt32LE(pos);
  const w1 = buf.readUInt32LE(pos + 4);
  const w2 = buf.readUInt32LE(pos + 8);
  const w3 = buf.readUInt32LE(pos + 12);
  return {
    offset: w0 + (w1 & 0x3ffff) * TWO32,
    length: w1 >>> 18,
    moffset: w2 + (w3 & 0x7fffff) * TWO32,
    zeroed: ((w3 >>> 23) & 1) === 1,
    tag: w3 >>> 24,
  };
}

export const INVALID_MAPPING: Readonly<Mapping> = Object.freeze({ offset: INVALID_OFFSET, length: 0, moffset: 0, zeroed: false, tag: 0 });
/** FF FF FF FF FF FF 03 00, then eight zero bytes. */
export const INVALID_RECORD: Buffer = encodeMapping(INVALID_MAPPING);

/** Cheap check on raw bytes, without decoding the whole record. */
export function isInvalidRecord(buf: Buffer, pos = 0): boolean {
  return buf.readUInt32LE(pos) === 0xffffffff && (buf.readUInt32LE(pos + 4) & 0x3ffff) === 0x3ffff;
}

/** Equal to a.end <= b.offset: the order (and non-overlap) every index keeps. */
export function mappingBefore(a: Mapping, b: Mapping): boolean {
  return a.offset + a.length <= b.offset;
}
