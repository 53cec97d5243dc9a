// ZFile: overlaybd's random-access compressed container (512-byte header, independently compressed
// blocks each followed by a CRC, a jump table of stored block lengths, 512-byte trailer).
// This module holds the header/trailer codec, jump-table loading, `ZFileReader` (a RandomAccess over
// the decompressed bytes, used by layer-open.ts beneath the LSMT reader) and `verifyZFile`.
// Writing lives in zfile-writer.ts; block codecs in codec.ts; the checksum in crc32c.ts.
import { FormatError } from '../util/errors.js';
import { BlockDecompressor, algorithmName, type ZFileAlgorithm } from './codec.js';
import { ZFILE_BLOCK_CRC_SEED, crc32cRaw } from './crc32c.js';
import type { RandomAccess } from './io.js';

export const ZFILE_HEADER_SIZE = 512;
/** Bytes of the C struct that are meaningful; the rest of the 512 is zero. */
export const ZFILE_HT_STRUCT_SIZE = 96;
export const ZFILE_MAGIC0 = Buffer.from([0x5a, 0x46, 0x69, 0x6c, 0x65, 0x00, 0x01, 0x00]); // "ZFile\0\1\0"
export const ZFILE_MAGIC1 = Buffer.from('tuji.yyf@Alibaba', 'latin1');

// Flag bits (only the low bits mean anything; legacy writers left stack garbage in the upper ones).
export const FLAG_HEADER = 1 << 0;
export const FLAG_TYPE_DATA = 1 << 1;
export const FLAG_SEALED = 1 << 2;
export const FLAG_HEADER_OVERWRITE = 1 << 3;
export const FLAG_CALC_DIGEST = 1 << 4;

/** Header as written before the blocks, and kept by `overlaybd-zfile`: 19. */
export const FLAGS_HEADER_PROVISIONAL = FLAG_HEADER | FLAG_TYPE_DATA | FLAG_CALC_DIGEST;
/** Header rewritten after the trailer by `overlaybd-commit -z`: 27. */
export const FLAGS_HEADER_OVERWRITTEN = FLAGS_HEADER_PROVISIONAL | FLAG_HEADER_OVERWRITE;
/** Trailer: 22. */
export const FLAGS_TRAILER = FLAG_TYPE_DATA | FLAG_SEALED | FLAG_CALC_DIGEST;

/** The reference reader's compressed-read buffer: a stored block (incl. CRC) larger than this is unreadable. */
export const MAX_STORED_BLOCK = 65536;
/** Block sizes we write: powers of two that can never overflow MAX_STORED_BLOCK. */
export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 32768;
const MAX_INDEX_ENTRIES = 1_000_000_000;

const OFF_DIGEST = 28;

/** Fields of one 512-byte header or trailer (§3.2). */
export interface ZFileHeaderInfo {
  /** Low 32 bits of the u64 flags; test single bits with the FLAG_* constants. */
  flags: number;
  /** High 32 bits of the flags, normally 0 (garbage in 2021-era files). Never interpreted. */
  flagsHigh: number;
  digest: number;
  indexOffset: number;
  /** Number of blocks (u32 jump-table entries). */
  indexSize: number;
  originalFileSize: number;
  indexCrc: number;
  blockSize: number;
  /** Raw algorithm byte: 1 = LZ4, 2 = zstd. */
  algo: number;
  level: number;
  useDict: number;
  dictSize: number;
  /** 1 = every block is followed by a 4-byte CRC (seed 100007). */
  verify: number;
}

export function hasFlag(info: ZFileHeaderInfo, flag: number): boolean {
  return (info.flags & flag) !== 0;
}

/** True if `buf` starts with the ZFile magics and the HEADER bit: the test readers use to detect a ZFile. */
export function looksLikeZFileHeader(buf: Buffer): boolean {
  if (buf.length < ZFILE_HT_STRUCT_SIZE) return false;
  if (!buf.subarray(0, 8).equals(ZFILE_MAGIC0) || !buf.subarray(8, 24).equals(ZFILE_MAGIC1)) return false;
  return (buf.readUInt32LE(32) & FLAG_HEADER) !== 0;
}

// Unused fields of legacy files hold garbage, so a huge value is not an error here; the bounds checks
// of whoever uses the field reject it (a value past 2^53 can never pass them).
function readU64(buf: Buffer, off: number): number {
  return Number(buf.readBigUInt64LE(off));
}

/**
 * Parses a 512-byte header or trailer found at byte `at` of `file`. Checks the magics only; flag and
 * digest policy belong to the caller, because header and trailer are judged differently.
 */
export function parseZFileHeaderTrailer(buf: Buffer, file: string, at: number): ZFileHeaderInfo {
  if (buf.length < ZFILE_HEADER_SIZE) {
    throw new FormatError(`ZFile header/trailer truncated (${buf.length} of 512 bytes)`, { file, offset: at });
  }
  if (!buf.subarray(0, 8).equals(ZFILE_MAGIC0)) {
    throw new FormatError('bad ZFile magic0', { file, offset: at });
  }
  if (!buf.subarray(8, 24).equals(ZFILE_MAGIC1)) {
    throw new FormatError('bad ZFile magic1', { file, offset: at + 8 });
  }
  return {
    digest: buf.readUInt32LE(OFF_DIGEST),
    flags: buf.readUInt32LE(32),
    flagsHigh: buf.readUInt32LE(36),
    indexOffset: readU64(buf, 40),
    indexSize: readU64(buf, 48),
    originalFileSize: readU64(buf, 56),
    indexCrc: buf.readUInt32LE(64),
    blockSize: buf.readUInt32LE(72),
    algo: buf[76]!,
    level: buf[77]!,
    useDict: buf[78]!,
    dictSize: buf.readUInt32LE(84),
    verify: buf[88]!,
  };
}

/** Raw CRC32C of all 512 bytes with the digest field taken as zero. */
export function computeHeaderDigest(buf: Buffer): number {
  const copy = Buffer.from(buf.subarray(0, ZFILE_HEADER_SIZE));
  copy.writeUInt32LE(0, OFF_DIGEST);
  return crc32cRaw(copy);
}

/** Encodes a header/trailer; the digest is computed (when CALC_DIGEST is set) and returned in place. */
export function encodeZFileHeaderTrailer(info: Omit<ZFileHeaderInfo, 'digest' | 'flagsHigh'>): Buffer {
  const buf = Buffer.alloc(ZFILE_HEADER_SIZE);
  ZFILE_MAGIC0.copy(buf, 0);
  ZFILE_MAGIC1.copy(buf, 8);
  buf.writeUInt32LE(ZFILE_HT_STRUCT_SIZE, 24);
  buf.writeUInt32LE(info.flags >>> 0, 32);
  buf.writeBigUInt64LE(BigInt(info.indexOffset), 40);
  buf.writeBigUInt64LE(BigInt(info.indexSize), 48);
  buf.writeBigUInt64LE(BigInt(info.originalFileSize), 56);
  buf.writeUInt32LE(info.indexCrc >>> 0, 64);
  buf.writeUInt32LE(info.blockSize, 72);
  buf[76] = info.algo;
  buf[77] = info.level;
  buf[78] = info.useDict;
  buf.writeUInt32LE(info.dictSize, 84);
  buf[88] = info.verify;
  if (info.flags & FLAG_CALC_DIGEST) buf.writeUInt32LE(computeHeaderDigest(buf), OFF_DIGEST);
  return buf;
}

/** Everything needed to locate and decode blocks, as loaded by `openZFile`. */
export interface ZFileLayout {
  /** The header at offset 0. */
  header: ZFileHeaderInfo;
  /** The trailer, when it was read (always unless the header carries HEADER_OVERWRITE). */
  trailer: ZFileHeaderInfo | null;
  /** Whichever of the two supplied index_offset/index_size. */
  info: ZFileHeaderInfo;
  algorithm: ZFileAlgorithm;
  /** `blockStart[i]` = file offset of block i; `blockStart[n]` = end of the last block. */
  blockStart: Float64Array;
  blockCount: number;
}

/**
 * Reads header, trailer (unless the header was overwritten) and jump table the way the reference
 * reader does, with every check that can fail named by byte offset. Block contents are not read.
 */
export function openZFile(ra: RandomAccess): ZFileLayout {
  const file = ra.name;
  if (ra.size < ZFILE_HEADER_SIZE) {
    throw new FormatError(`file too small for a ZFile (${ra.size} bytes)`, { file, offset: ra.size });
  }
  const hbuf = ra.pread(0, ZFILE_HEADER_SIZE);
  const header = parseZFileHeaderTrailer(hbuf, file, 0);
  if (!hasFlag(header, FLAG_HEADER)) {
    throw new FormatError('ZFile header lacks the HEADER flag', { file, offset: 32, field: 'flags' });
  }
  if (hasFlag(header, FLAG_CALC_DIGEST)) {
    const want = computeHeaderDigest(hbuf);
    if (want !== header.digest) {
      throw new FormatError(
        `ZFile header digest mismatch (stored 0x${hex(header.digest)}, computed 0x${hex(want)})`,
        { file, offset: OFF_DIGEST, field: 'digest' },
      );
    }
  }
  let trailer: ZFileHeaderInfo | null = null;
  let info = header;
  let infoAt = 0;
  const trailerAt = ra.size - ZFILE_HEADER_SIZE;
  if (!hasFlag(header, FLAG_HEADER_OVERWRITE)) {
    if (trailerAt < ZFILE_HEADER_SIZE) {
      throw new FormatError(`ZFile has no room for a trailer (${ra.size} bytes)`, { file, offset: ra.size });
    }
    trailer = parseZFileHeaderTrailer(ra.pread(trailerAt, ZFILE_HEADER_SIZE), file, trailerAt);
    const bad =
      hasFlag(trailer, FLAG_HEADER) ? 'has the HEADER flag'
      : !hasFlag(trailer, FLAG_TYPE_DATA) ? 'lacks the TYPE (data) flag'
      : !hasFlag(trailer, FLAG_SEALED) ? 'lacks the SEALED flag'
      : null;
    if (bad) throw new FormatError(`ZFile trailer ${bad}`, { file, offset: trailerAt + 32, field: 'flags' });
    info = trailer;
    infoAt = trailerAt;
  }
  const algorithm = algorithmName(info.algo);
  if (!algorithm) {
    throw new FormatError(`unsupported ZFile algorithm ${info.algo}`, { file, offset: infoAt + 76, field: 'algo' });
  }
  // Writers offer 4..64 KiB; anything else is corruption (and would make us allocate huge blocks).
  if (info.blockSize < 512 || info.blockSize > MAX_STORED_BLOCK || (info.blockSize & (info.blockSize - 1)) !== 0) {
    throw new FormatError(`ZFile block size ${info.blockSize} is not a power of two from 512 to ${MAX_STORED_BLOCK}`, {
      file, offset: infoAt + 72, field: 'block_size',
    });
  }
  if (info.useDict !== 0 || info.dictSize !== 0) {
    throw new FormatError('ZFile dictionaries are not supported', { file, offset: infoAt + 84, field: 'dict_size' });
  }
  const n = info.indexSize;
  const dataStart = ZFILE_HEADER_SIZE;
  if (n > MAX_INDEX_ENTRIES) {
    throw new FormatError(`ZFile index_size ${n} exceeds ${MAX_INDEX_ENTRIES}`, {
      file, offset: infoAt + 48, field: 'index_size',
    });
  }
  if (info.indexOffset < dataStart || info.indexOffset + 4 * n > trailerAt) {
    throw new FormatError(
      `ZFile jump table [${info.indexOffset}, +${4 * n}) does not fit between header and trailer (${trailerAt})`,
      { file, offset: infoAt + 40, field: 'index_offset' },
    );
  }
  const expectBlocks = Math.ceil(info.originalFileSize / info.blockSize);
  if (expectBlocks !== n) {
    throw new FormatError(
      `ZFile has ${n} blocks but original size ${info.originalFileSize} needs ${expectBlocks} of ${info.blockSize}`,
      { file, offset: infoAt + 48, field: 'index_size' },
    );
  }
  const table = ra.pread(info.indexOffset, 4 * n);
  if (table.length !== 4 * n) {
    throw new FormatError('ZFile jump table truncated', { file, offset: info.indexOffset + table.length });
  }
  if (hasFlag(info, FLAG_CALC_DIGEST)) {
    const crc = crc32cRaw(table);
    if (crc !== info.indexCrc) {
      throw new FormatError(
        `ZFile jump table CRC mismatch (stored 0x${hex(info.indexCrc)}, computed 0x${hex(crc)})`,
        { file, offset: info.indexOffset, field: 'index_crc' },
      );
    }
  }
  const minLen = info.verify ? 5 : 1;
  const blockStart = new Float64Array(n + 1);
  let pos = dataStart + info.dictSize;
  for (let i = 0; i < n; i++) {
    blockStart[i] = pos;
    const len = table.readUInt32LE(4 * i);
    if (len < minLen || len > MAX_STORED_BLOCK) {
      throw new FormatError(
        len > MAX_STORED_BLOCK
          ? `ZFile block ${i} stored length ${len} exceeds ${MAX_STORED_BLOCK} (unreadable by overlaybd)`
          : `ZFile block ${i} stored length ${len} is too small`,
        { file, offset: info.indexOffset + 4 * i, field: 'jump_table', block: i },
      );
    }
    pos += len;
    if (pos > info.indexOffset) {
      throw new FormatError(`ZFile block ${i} ends at ${pos}, past the jump table at ${info.indexOffset}`, {
        file, offset: info.indexOffset + 4 * i, field: 'jump_table', block: i,
      });
    }
  }
  blockStart[n] = pos;
  return { header, trailer, info, algorithm, blockStart, blockCount: n };
}

/** Reads, CRC-checks and decodes block `i` into `dst`; returns the decoded length. Throws FormatError. */
function decodeBlock(
  ra: RandomAccess, layout: ZFileLayout, dec: BlockDecompressor, i: number, dst: Buffer,
): number {
  const file = ra.name;
  const start = layout.blockStart[i]!;
  const stored = layout.blockStart[i + 1]! - start;
  const raw = ra.pread(start, stored);
  if (raw.length !== stored) {
    throw new FormatError(`ZFile block ${i} truncated`, { file, offset: start + raw.length, block: i });
  }
  let payload = raw;
  if (layout.info.verify) {
    payload = raw.subarray(0, stored - 4);
    const want = raw.readUInt32LE(stored - 4);
    const got = crc32cRaw(payload, ZFILE_BLOCK_CRC_SEED);
    if (want !== got) {
      throw new FormatError(
        `ZFile block ${i} CRC mismatch (stored 0x${hex(want)}, computed 0x${hex(got)})`,
        { file, offset: start, block: i },
      );
    }
  }
  const { blockSize, originalFileSize } = layout.info;
  const expect = Math.min(blockSize, originalFileSize - i * blockSize);
  const got = dec.decompress(payload, dst.subarray(0, blockSize));
  if (typeof got === 'string') throw new FormatError(`ZFile block ${i}: ${got}`, { file, offset: start, block: i });
  if (got !== expect) {
    throw new FormatError(`ZFile block ${i} decodes to ${got} bytes, expected ${expect}`, {
      file, offset: start, block: i,
    });
  }
  return got;
}

const CACHE_BLOCKS = 64;

/**
 * The decompressed content of a ZFile as a RandomAccess. Every block read is CRC-checked; a small LRU
 * of decoded blocks serves the sub-block reads the LSMT reader makes. Not thread-safe (one per thread).
 */
export class ZFileReader implements RandomAccess {
  readonly size: number;
  readonly name: string;
  readonly layout: ZFileLayout;
  private readonly dec: BlockDecompressor;
  private readonly cache = new Map<number, Buffer>();

  constructor(private readonly ra: RandomAccess, layout?: ZFileLayout) {
    this.layout = layout ?? openZFile(ra);
    this.size = this.layout.info.originalFileSize;
    this.name = `${ra.name}[zfile]`;
    this.dec = new BlockDecompressor(this.layout.algorithm);
  }

  get blockSize(): number {
    return this.layout.info.blockSize;
  }

  /** Decoded block `i` (shared with the cache: do not modify). */
  block(i: number): Buffer {
    const hit = this.cache.get(i);
    if (hit) {
      this.cache.delete(i);
      this.cache.set(i, hit);
      return hit;
    }
    let out = Buffer.allocUnsafe(this.blockSize);
    out = out.subarray(0, decodeBlock(this.ra, this.layout, this.dec, i, out));
    if (this.cache.size >= CACHE_BLOCKS) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(i, out);
    return out;
  }

  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    if (first === last) {
      const b = this.block(first);
      return Buffer.from(b.subarray(offset - first * bs, end - first * bs));
    }
    const out = Buffer.allocUnsafe(end - offset);
    for (let i = first; i <= last; i++) {
      const b = this.block(i);
      const from = Math.max(offset, i * bs);
      const to = Math.min(end, (i + 1) * bs);
      b.copy(out, from - offset, from - i * bs, to - i * bs);
    }
    return out;
  }
}

export type ZFileVerdict =
  | { ok: true; blocks: number; originalSize: number; algorithm: ZFileAlgorithm; blockSize: number }
  | { ok: false; offset: number; reason: string };

/**
 * Checks a whole ZFile: header and trailer magics, flags and digests, header/trailer agreement, jump
 * table CRC and bounds, that blocks tile [512, index_offset) exactly, every block CRC and that every
 * block decodes to its exact size. Returns the first fault with its byte offset; never throws on bad
 * data.
 */
export function verifyZFile(ra: RandomAccess): ZFileVerdict {
  try {
    const layout = openZFile(ra);
    const { info, header } = layout;
    const trailerAt = ra.size - ZFILE_HEADER_SIZE;
    // The reference reader skips the trailer when the header was overwritten; a full check still reads it.
    const trailer = layout.trailer ?? parseZFileHeaderTrailer(ra.pread(trailerAt, ZFILE_HEADER_SIZE), ra.name, trailerAt);
    if (hasFlag(trailer, FLAG_HEADER) || !hasFlag(trailer, FLAG_SEALED)) {
      return { ok: false, offset: trailerAt + 32, reason: 'trailer flags are not those of a sealed trailer' };
    }
    if (hasFlag(trailer, FLAG_CALC_DIGEST)) {
      const d = computeHeaderDigest(ra.pread(trailerAt, ZFILE_HEADER_SIZE));
      if (d !== trailer.digest) {
        return { ok: false, offset: trailerAt + OFF_DIGEST, reason: `trailer digest mismatch (stored 0x${hex(trailer.digest)}, computed 0x${hex(d)})` };
      }
    }
    if (hasFlag(header, FLAG_HEADER_OVERWRITE)) {
      for (const k of ['indexOffset', 'indexSize', 'originalFileSize', 'indexCrc', 'blockSize', 'algo', 'verify'] as const) {
        if (header[k] !== trailer[k]) {
          return { ok: false, offset: 40, reason: `overwritten header disagrees with trailer on ${k}` };
        }
      }
    }
    if (layout.blockStart[layout.blockCount] !== info.indexOffset) {
      return {
        ok: false,
        offset: layout.blockStart[layout.blockCount]!,
        reason: `blocks end at ${layout.blockStart[layout.blockCount]} but the jump table starts at ${info.indexOffset}`,
      };
    }
    if (info.indexOffset + 4 * info.indexSize !== trailerAt) {
      return { ok: false, offset: info.indexOffset + 4 * info.indexSize, reason: 'bytes between jump table and trailer' };
    }
    const dec = new BlockDecompressor(layout.algorithm);
    const scratch = Buffer.allocUnsafe(info.blockSize);
    for (let i = 0; i < layout.blockCount; i++) decodeBlock(ra, layout, dec, i, scratch);
    return { ok: true, blocks: layout.blockCount, originalSize: info.originalFileSize, algorithm: layout.algorithm, blockSize: info.blockSize };
  } catch (err) {
    if (err instanceof FormatError) {
      return { ok: false, offset: err.context.offset ?? 0, reason: err.message };
    }
    return { ok: false, offset: 0, reason: err instanceof Error ? err.message : String(err) };
  }
}

function hex(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}
