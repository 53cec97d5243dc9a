// The on-disk side of the device's writable layer: overlaybd's append-only RW pair (a data file and
// an index file, format §2.1). Creating the pair, validating its headers, and crash recovery on reopen
// (drop a torn tail, cut the index at the first record whose data never reached the data file) live
// here; shared-upper.ts keeps the live index in shared memory so every FUSE worker can write.
// The device needs a multi-writer layout that a single-threaded RW layer object cannot provide, so it
// speaks the file format directly; the commit step reads the same two files.
import { closeSync, fstatSync, ftruncateSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { FormatError, ObdkitError } from '../../src/util/errors.js';

export const SECTOR = 512;
export const HEADER_SIZE = 4096;
export const RECORD_SIZE = 16;
export const INVALID_OFFSET = 2 ** 50 - 1;
export const MAX_RECORD_LENGTH = 16383;
const NULL_UUID = '00000000-0000-0000-0000-000000000000';

const MAGIC0 = Buffer.from([0x4c, 0x53, 0x4d, 0x54, 0x00, 0x01, 0x02, 0x00]);
const MAGIC1 = Buffer.from([0x65, 0x7e, 0x63, 0xd2, 0x94, 0x44, 0x08, 0x4c, 0xa2, 0xd2, 0xc8, 0xec, 0x4f, 0xcf, 0xae, 0x8a]);
const FLAG_HEADER = 1;
const FLAG_DATA = 2;
const FLAG_SEALED = 4;

export interface PairHeader {
  flags: number;
  indexOffset: number;
  virtualSize: number;
  uuid: string;
  parentUuid: string;
}

export interface UpperRecord {
  /** All in sectors, as on disk. */
  offset: number;
  length: number;
  moffset: number;
  zeroed: boolean;
}

export function encodeHeader(h: PairHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC0.copy(b, 0);
  MAGIC1.copy(b, 8);
  b.writeUInt32LE(390, 24);
  b.writeUInt32LE(h.flags, 28);
  b.writeBigUInt64LE(BigInt(h.indexOffset), 32);
  b.writeBigUInt64LE(0n, 40);
  b.writeBigUInt64LE(BigInt(h.virtualSize), 48);
  b.write(h.uuid.toUpperCase(), 56, 36, 'latin1');
  b.write(h.parentUuid.toUpperCase(), 93, 36, 'latin1');
  b[132] = 1;
  b[133] = 1;
  return b;
}

export function decodeHeader(b: Buffer, file: string): PairHeader {
  if (b.length < 390 || !b.subarray(0, 8).equals(MAGIC0) || !b.subarray(8, 24).equals(MAGIC1)) {
    throw new FormatError('not an LSMT file (bad magic)', { file, offset: 0 });
  }
  return {
    flags: b.readUInt32LE(28),
    indexOffset: Number(b.readBigUInt64LE(32)),
    virtualSize: Number(b.readBigUInt64LE(48)),
    uuid: b.toString('latin1', 56, 92),
    parentUuid: b.toString('latin1', 93, 129),
  };
}

export function encodeRecord(r: UpperRecord, out: Buffer, at: number): void {
  const off = r.offset;
  out.writeUInt32LE(off % 2 ** 32, at);
  out.writeUInt32LE(Math.floor(off / 2 ** 32) + r.length * 2 ** 18, at + 4);
  out.writeUInt32LE(r.moffset % 2 ** 32, at + 8);
  out.writeUInt32LE(Math.floor(r.moffset / 2 ** 32) + (r.zeroed ? 1 << 23 : 0), at + 12);
}

export function decodeRecord(b: Buffer, at: number): UpperRecord {
  const w1 = b.readUInt32LE(at + 4);
  const w3 = b.readUInt32LE(at + 12);
  return {
    offset: b.readUInt32LE(at) + (w1 & 0x3ffff) * 2 ** 32,
    length: w1 >>> 18,
    moffset: b.readUInt32LE(at + 8) + (w3 & 0x7fffff) * 2 ** 32,
    zeroed: ((w3 >>> 23) & 1) === 1,
  };
}

export interface PairPaths {
  data: string;
  index: string;
}

/** Creates a fresh, empty RW pair (overwrites nothing: fails if either file exists). */
export function createPair(paths: PairPaths, virtualSize: number, parentUuid = NULL_UUID): void {
  const uuid = randomUUID();
  const fds: number[] = [];
  try {
    const d = openSync(paths.data, 'wx');
    fds.push(d);
    writeSync(d, encodeHeader({ flags: FLAG_HEADER | FLAG_DATA, indexOffset: 0, virtualSize, uuid, parentUuid }));
    fsyncSync(d);
    const i = openSync(paths.index, 'wx');
    fds.push(i);
    writeSync(i, encodeHeader({ flags: FLAG_HEADER, indexOffset: HEADER_SIZE, virtualSize, uuid, parentUuid }));
    fsyncSync(i);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

export interface RecoveredPair {
  virtualSize: number;
  /** Data append position in sectors (first free sector of the data file). */
  dataTail: number;
  /** Replayed records, in file order (oldest first). */
  records: UpperRecord[];
  /** Bytes cut off the index file by recovery (torn tail, records pointing past the data). */
  truncatedBytes: number;
}

/**
 * Opens an existing pair the way overlaybd does and repairs what a crash can leave behind: a partial
 * trailing record, and records whose data never reached the data file (data is written before its
 * record, but without an fsync the page cache may persist them in either order). Everything at and
 * after the first such record completed after the last fsync, so cutting there loses nothing that
 * was flushed.
 */
export function recoverPair(paths: PairPaths): RecoveredPair {
  const dfd = openSync(paths.data, 'r');
  const ifd = openSync(paths.index, 'r+');
  try {
    const dh = decodeHeader(readAt(dfd, 0, HEADER_SIZE), paths.data);
    const ih = decodeHeader(readAt(ifd, 0, HEADER_SIZE), paths.index);
    if ((dh.flags & FLAG_HEADER) === 0 || (dh.flags & FLAG_DATA) === 0 || (dh.flags & FLAG_SEALED) !== 0) {
      throw new FormatError(`data file header flags ${dh.flags} are not those of an RW data file`, { file: paths.data, offset: 28 });
    }
    if ((ih.flags & FLAG_HEADER) === 0 || (ih.flags & FLAG_DATA) !== 0 || (ih.flags & FLAG_SEALED) !== 0) {
      throw new FormatError(`index file header flags ${ih.flags} are not those of an RW index file`, { file: paths.index, offset: 28 });
    }
    if (ih.indexOffset !== HEADER_SIZE) {
      throw new FormatError(`index_offset ${ih.indexOffset} must be ${HEADER_SIZE}`, { file: paths.index, offset: 32 });
    }
    const dataSize = fstatSync(dfd).size;
    const dataEnd = Math.floor(dataSize / SECTOR);
    const indexSize = fstatSync(ifd).size;
    const whole = Math.floor((indexSize - HEADER_SIZE) / RECORD_SIZE);
    const records: UpperRecord[] = [];
    let goodEnd = HEADER_SIZE;
    const chunkRecords = 65536;
    scan: for (let first = 0; first < whole; first += chunkRecords) {
      const n = Math.min(chunkRecords, whole - first);
      const buf = readAt(ifd, HEADER_SIZE + first * RECORD_SIZE, n * RECORD_SIZE);
      for (let k = 0; k < n; k++) {
        const r = decodeRecord(buf, k * RECORD_SIZE);
        if (r.offset !== INVALID_OFFSET) {
          const bad = r.length === 0 || (r.zeroed ? r.moffset > dataEnd : r.moffset < 8 || r.moffset + r.length > dataEnd);
          if (bad) break scan;
          records.push(r);
        }
        goodEnd = HEADER_SIZE + (first + k + 1) * RECORD_SIZE;
      }
    }
    if (goodEnd < indexSize) {
      ftruncateSync(ifd, goodEnd);
      fsyncSync(ifd);
    }
    return {
      virtualSize: ih.virtualSize || dh.virtualSize,
      dataTail: Math.max(8, Math.ceil(dataSize / SECTOR)),
      records,
      truncatedBytes: indexSize - goodEnd,
    };
  } finally {
    closeSync(dfd);
    closeSync(ifd);
  }
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, offset + done);
    if (n === 0) break;
    done += n;
  }
  if (done < length && offset === 0) {
    throw new ObdkitError('ESHORT', 'file shorter than an LSMT header', { offset: done });
  }
  return out;
}

/** Bytes in the pair's index file (header + whole records appended so far). */
export function indexFileSize(paths: PairPaths): number {
  const fd = openSync(paths.index, 'r');
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `out`: the pair's index header followed by the records stored in bytes [from, to) of its
 * index file. Paired with the same data file, that is an RW layer holding exactly what was written
 * between two checkpoints of a live device (data is append-only, so records keep pointing at valid
 * data whatever is written later). `from`/`to` are index-file offsets on record boundaries.
 */
export function writeIndexSlice(paths: PairPaths, from: number, to: number, out: string): void {
  if (from < HEADER_SIZE || to < from || (from - HEADER_SIZE) % RECORD_SIZE !== 0 || (to - HEADER_SIZE) % RECORD_SIZE !== 0) {
    throw new ObdkitError('EINVAL', `index slice [${from}, ${to}) is not on record boundaries`, { file: paths.index, offset: from });
  }
  const src = openSync(paths.index, 'r');
  let dst = -1;
  try {
    dst = openSync(out, 'wx');
    const header = readAt(src, 0, HEADER_SIZE);
    decodeHeader(header, paths.index);
    writeFullyAt(dst, header, 0);
    const chunk = Buffer.alloc(Math.min(4 * 1024 * 1024, Math.max(RECORD_SIZE, to - from)));
    for (let at = from; at < to; ) {
      const n = Math.min(chunk.length, to - at);
      const got = readSync(src, chunk, 0, n, at);
      if (got !== n) throw new FormatError(`index file ends at ${at + got}, before the checkpoint at ${to}`, { file: paths.index, offset: at + got });
      writeFullyAt(dst, chunk.subarray(0, n), HEADER_SIZE + (at - from));
      at += n;
    }
  } finally {
    closeSync(src);
    if (dst >= 0) closeSync(dst);
  }
}

function writeFullyAt(fd: number, buf: Buffer, pos: number): void {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
}
