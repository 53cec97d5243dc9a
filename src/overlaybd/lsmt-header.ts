// The 4096-byte block that opens every LSMT file (header) and closes every sealed one (trailer): magics,
// flag bits, index position and size, virtual size, uuid/parent uuid and the 256-byte user tag.
// Only the first 390 bytes carry fields; the rest is zero. lsmt-file.ts and rw-layer.ts parse it,
// commit.ts and rw-layer.ts encode it.
import { FormatError } from '../util/errors.js';
import { NULL_UUID, UUID_FIELD_SIZE, isValidUuid, normalizeUuid } from './uuid.js';

export const HT_SPACE = 4096;
/** sizeof(HeaderTrailer) in the reference implementation; written, never checked. */
export const HT_STRUCT_SIZE = 390;
export const USER_TAG_SIZE = 256;
export const LSMT_VERSION = 1;
export const LSMT_SUB_VERSION = 1;

/** "LSMT\0\x01\x02\0" */
export const LSMT_MAGIC0 = Buffer.from([0x4c, 0x53, 0x4d, 0x54, 0x00, 0x01, 0x02, 0x00]);
export const LSMT_MAGIC1 = Buffer.from([0x65, 0x7e, 0x63, 0xd2, 0x94, 0x44, 0x08, 0x4c, 0xa2, 0xd2, 0xc8, 0xec, 0x4f, 0xcf, 0xae, 0x8a]);

/** Set in a header, clear in a trailer. */
export const FLAG_HEADER = 1 << 0;
/** Set in data files (and sealed layers), clear in the index file of a writable layer. */
export const FLAG_DATA = 1 << 1;
export const FLAG_SEALED = 1 << 2;
export const FLAG_SPARSE_RW = 1 << 4;

// Field offsets inside the block.
export const OFF_MAGIC0 = 0;
export const OFF_MAGIC1 = 8;
export const OFF_SIZE = 24;
export const OFF_FLAGS = 28;
export const OFF_INDEX_OFFSET = 32;
export const OFF_INDEX_SIZE = 40;
export const OFF_VIRTUAL_SIZE = 48;
export const OFF_UUID = 56;
export const OFF_PARENT_UUID = 93;
export const OFF_RESERVED = 130;
export const OFF_VERSION = 132;
export const OFF_SUB_VERSION = 133;
export const OFF_USER_TAG = 134;

export interface HeaderTrailer {
  flags: number;
  /** Bytes from file start to the index (4096 in a writable index file, 0 in headers of sealed files). */
  indexOffset: number;
  /** Number of 16-byte records, not bytes. */
  indexSize: number;
  /** Bytes of the virtual disk. */
  virtualSize: number;
  /** As stored (normally an upper-case UUID string; not validated on read). */
  uuid: string;
  parentUuid: string;
  version: number;
  subVersion: number;
  /** Commit message bytes, up to the first NUL. */
  userTag: Buffer;
}

export const isHeader = (h: HeaderTrailer): boolean => (h.flags & FLAG_HEADER) !== 0;
export const isDataFile = (h: HeaderTrailer): boolean => (h.flags & FLAG_DATA) !== 0;
export const isSealed = (h: HeaderTrailer): boolean => (h.flags & FLAG_SEALED) !== 0;
export const isSparseRw = (h: HeaderTrailer): boolean => (h.flags & FLAG_SPARSE_RW) !== 0;

/** True if `buf` (at least 24 bytes) starts with both LSMT magics. */
export function hasLsmtMagic(buf: Buffer): boolean {
  return buf.length >= 24 && buf.subarray(0, 8).equals(LSMT_MAGIC0) && buf.subarray(8, 24).equals(LSMT_MAGIC1);
}

/**
 * Parses the block found at byte `at` of `file`. Checks only the magics: which flags a block must carry
 * depends on where it was found, so callers check those with the `is*` helpers.
 */
export function parseHeaderTrailer(block: Buffer, file: string, at: number): HeaderTrailer {
  if (block.length < HT_STRUCT_SIZE) {
    throw new FormatError(`LSMT header/trailer truncated: ${block.length} of ${HT_SPACE} bytes`, { file, offset: at + block.length });
  }
  if (!block.subarray(OFF_MAGIC0, OFF_MAGIC0 + 8).equals(LSMT_MAGIC0)) {
    throw new FormatError('not an LSMT file: wrong magic0', { file, offset: at + OFF_MAGIC0, field: 'magic0' });
  }
  if (!block.subarray(OFF_MAGIC1, OFF_MAGIC1 + 16).equals(LSMT_MAGIC1)) {
    throw new FormatError('not an LSMT file: wrong magic1', { file, offset: at + OFF_MAGIC1, field: 'magic1' });
  }
  return {
    flags: block.readUInt32LE(OFF_FLAGS),
    indexOffset: readU64(block, OFF_INDEX_OFFSET, file, at, 'index_offset'),
    indexSize: readU64(block, OFF_INDEX_SIZE, file, at, 'index_size'),
    virtualSize: readU64(block, OFF_VIRTUAL_SIZE, file, at, 'virtual_size'),
    uuid: readCString(block, OFF_UUID, UUID_FIELD_SIZE).toString('latin1'),
    parentUuid: readCString(block, OFF_PARENT_UUID, UUID_FIELD_SIZE).toString('latin1'),
    version: block[OFF_VERSION]!,
    subVersion: block[OFF_SUB_VERSION]!,
    userTag: Buffer.from(readCString(block, OFF_USER_TAG, USER_TAG_SIZE)),
  };
}

export interface HeaderTrailerInit {
  flags: number;
  indexOffset?: number;
  indexSize?: number;
  virtualSize: number;
  uuid?: string;
  parentUuid?: string;
  userTag?: Buffer | string;
}

/**
 * The 4096-byte block. UUIDs go through their binary form (so they land upper-case); an absent or
 * invalid one is written as the null UUID, as the reference writer does.
 */
export function encodeHeaderTrailer(init: HeaderTrailerInit): Buffer {
  const b = Buffer.alloc(HT_SPACE);
  LSMT_MAGIC0.copy(b, OFF_MAGIC0);
  LSMT_MAGIC1.copy(b, OFF_MAGIC1);
  b.writeUInt32LE(HT_STRUCT_SIZE, OFF_SIZE);
  b.writeUInt32LE(init.flags >>> 0, OFF_FLAGS);
  writeU64(b, OFF_INDEX_OFFSET, init.indexOffset ?? 0);
  writeU64(b, OFF_INDEX_SIZE, init.indexSize ?? 0);
  writeU64(b, OFF_VIRTUAL_SIZE, init.virtualSize);
  b.write(uuidOrNull(init.uuid), OFF_UUID, 'latin1');
  b.write(uuidOrNull(init.parentUuid), OFF_PARENT_UUID, 'latin1');
  b[OFF_VERSION] = LSMT_VERSION;
  b[OFF_SUB_VERSION] = LSMT_SUB_VERSION;
  const tag = userTagBytes(init.userTag);
  tag.copy(b, OFF_USER_TAG);
  return b;
}

/** The user tag as stored; throws if longer than the 256-byte field. */
export function userTagBytes(tag: Buffer | string | undefined): Buffer {
  const b = tag === undefined ? Buffer.alloc(0) : typeof tag === 'string' ? Buffer.from(tag, 'utf8') : tag;
  if (b.length > USER_TAG_SIZE) {
    throw new RangeError(`user tag is ${b.length} bytes, at most ${USER_TAG_SIZE} fit in an LSMT header`);
  }
  return b;
}

function uuidOrNull(s: string | undefined): string {
  return s !== undefined && isValidUuid(s) ? normalizeUuid(s) : NULL_UUID;
}

function readCString(b: Buffer, off: number, max: number): Buffer {
  const field = b.subarray(off, off + max);
  const nul = field.indexOf(0);
  return nul < 0 ? field : field.subarray(0, nul);
}

function readU64(b: Buffer, off: number, file: string, at: number, field: string): number {
  const lo = b.readUInt32LE(off);
  const hi = b.readUInt32LE(off + 4);
  // Anything at or above 2^53 cannot be a real size or offset; refuse rather than round.
  if (hi >= 0x200000) throw new FormatError(`${field} out of range`, { file, offset: at + off, field });
  return hi * 2 ** 32 + lo;
}

function writeU64(b: Buffer, off: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`not a u64 value: ${v}`);
  b.writeUInt32LE(v % 2 ** 32, off);
  b.writeUInt32LE(Math.floor(v / 2 ** 32), off + 4);
}
