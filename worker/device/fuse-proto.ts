// The slice of the Linux FUSE wire protocol that a one-file filesystem needs: opcodes, INIT flags,
// and encoders for the fixed-size reply structs. Pure functions over Buffers; fuse-session.ts
// decides what to answer, fuse-worker.ts moves the bytes to and from /dev/fuse.
// Layouts follow <linux/fuse.h>; we negotiate protocol 7.31 so every struct has its 7.31 size.

export const FUSE_KERNEL_VERSION = 7;
export const FUSE_NEGOTIATED_MINOR = 31;
export const FUSE_ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  GETXATTR: 22,
  LISTXATTR: 23,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  SYNCFS: 50,
  STATX: 52,
} as const;

export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  ASYNC_DIO: 1 << 15,
  MAX_PAGES: 1 << 22,
} as const;

export const FOPEN_KEEP_CACHE = 1 << 1;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
/** Offset of the payload of a WRITE request: in_header + fuse_write_in. */
export const WRITE_DATA_OFFSET = IN_HEADER_SIZE + 40;

export const MAX_WRITE = 1024 * 1024;
export const MAX_PAGES = 256;
export const MAX_BACKGROUND = 64;
export const CONGESTION_THRESHOLD = 48;
/** The kernel refuses reads into buffers smaller than max_write plus one page of headers. */
export const READ_BUFFER_SIZE = MAX_WRITE + 4096 + 4096;

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const DT_DIR = 4;
export const DT_REG = 8;

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EBADF: 9,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  ENODATA: 61,
  EOPNOTSUPP: 95,
} as const;

export function requestOpcode(req: Buffer): number {
  return req.readUInt32LE(4);
}

/** Node ids are small here (1 and 2); the high word is never set. */
export function requestNodeId(req: Buffer): number {
  return req.readUInt32LE(16) + req.readUInt32LE(20) * 2 ** 32;
}

/** The request's `unique` as a BigInt, for the rare replies built through reply(). */
export function requestUnique(req: Buffer): bigint {
  return req.readBigUInt64LE(8);
}

/** Fills an out_header in place, copying `unique` from the request (no BigInt on the hot path). */
export function writeOutHeaderFrom(out: Buffer, req: Buffer, error: number): void {
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(error, 4);
  req.copy(out, 8, 8, 16);
}

/** Reply buffer with the out_header filled in; `body` bytes follow it. */
export function reply(unique: bigint, bodyLength: number): Buffer {
  const out = Buffer.alloc(OUT_HEADER_SIZE + bodyLength);
  writeOutHeader(out, unique, 0);
  return out;
}

export function writeOutHeader(out: Buffer, unique: bigint, error: number): void {
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(error, 4);
  out.writeBigUInt64LE(unique, 8);
}

export function errorReply(unique: bigint, errno: number): Buffer {
  const out = Buffer.alloc(OUT_HEADER_SIZE);
  writeOutHeader(out, unique, -errno);
  return out;
}

export interface Attr {
  ino: number;
  size: number;
  mode: number;
  nlink: number;
  mtimeSec: number;
}

/** fuse_attr, 88 bytes, at `at`. */
export function writeAttr(out: Buffer, at: number, a: Attr): void {
  out.writeBigUInt64LE(BigInt(a.ino), at);
  out.writeBigUInt64LE(BigInt(a.size), at + 8);
  out.writeBigUInt64LE(BigInt(Math.ceil(a.size / 512)), at + 16);
  for (const f of [24, 32, 40]) out.writeBigUInt64LE(BigInt(a.mtimeSec), at + f);
  out.writeUInt32LE(a.mode, at + 60);
  out.writeUInt32LE(a.nlink, at + 64);
  out.writeUInt32LE(4096, at + 80); // blksize
}

export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;

export function entryReply(unique: bigint, a: Attr, validSec: number): Buffer {
  const out = reply(unique, ENTRY_OUT_SIZE);
  const b = OUT_HEADER_SIZE;
  out.writeBigUInt64LE(BigInt(a.ino), b);
  out.writeBigUInt64LE(BigInt(validSec), b + 16); // entry_valid
  out.writeBigUInt64LE(BigInt(validSec), b + 24); // attr_valid
  writeAttr(out, b + 40, a);
  return out;
}

export function attrReply(unique: bigint, a: Attr, validSec: number): Buffer {
  const out = reply(unique, ATTR_OUT_SIZE);
  out.writeBigUInt64LE(BigInt(validSec), OUT_HEADER_SIZE);
  writeAttr(out, OUT_HEADER_SIZE + 16, a);
  return out;
}

export function openReply(unique: bigint, openFlags: number): Buffer {
  const out = reply(unique, 16);
  out.writeUInt32LE(openFlags, OUT_HEADER_SIZE + 8);
  return out;
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function readInitIn(req: Buffer): InitIn {
  const b = IN_HEADER_SIZE;
  return {
    major: req.readUInt32LE(b),
    minor: req.readUInt32LE(b + 4),
    maxReadahead: req.readUInt32LE(b + 8),
    flags: req.readUInt32LE(b + 12),
  };
}

/** fuse_init_out, always the full 64 bytes. */
export function initReply(unique: bigint, kernel: InitIn): { out: Buffer; minor: number; flags: number } {
  const out = reply(unique, 64);
  const b = OUT_HEADER_SIZE;
  const minor = Math.min(kernel.minor, FUSE_NEGOTIATED_MINOR);
  const wanted = InitFlag.ASYNC_READ | InitFlag.BIG_WRITES | InitFlag.ASYNC_DIO | InitFlag.MAX_PAGES;
  const flags = (kernel.flags & wanted) >>> 0;
  out.writeUInt32LE(FUSE_KERNEL_VERSION, b);
  out.writeUInt32LE(minor, b + 4);
  out.writeUInt32LE(kernel.maxReadahead, b + 8);
  out.writeUInt32LE(flags, b + 12);
  out.writeUInt16LE(MAX_BACKGROUND, b + 16);
  out.writeUInt16LE(CONGESTION_THRESHOLD, b + 18);
  out.writeUInt32LE(MAX_WRITE, b + 20);
  out.writeUInt32LE(1, b + 24); // time_gran: 1 ns
  out.writeUInt16LE(MAX_PAGES, b + 28);
  return { out, minor, flags };
}

/** One fuse_dirent (8-byte aligned) for READDIR. */
export function dirent(ino: number, off: number, name: string, type: number): Buffer {
  const nameBuf = Buffer.from(name);
  const size = (24 + nameBuf.length + 7) & ~7;
  const out = Buffer.alloc(size);
  out.writeBigUInt64LE(BigInt(ino), 0);
  out.writeBigUInt64LE(BigInt(off), 8);
  out.writeUInt32LE(nameBuf.length, 16);
  out.writeUInt32LE(type, 20);
  nameBuf.copy(out, 24);
  return out;
}

export function statfsReply(unique: bigint, sizeBytes: number): Buffer {
  const out = reply(unique, 80);
  const b = OUT_HEADER_SIZE;
  const blocks = BigInt(Math.ceil(sizeBytes / 4096));
  out.writeBigUInt64LE(blocks, b);
  out.writeBigUInt64LE(0n, b + 8);
  out.writeBigUInt64LE(0n, b + 16);
  out.writeBigUInt64LE(2n, b + 24);
  out.writeUInt32LE(4096, b + 40); // bsize
  out.writeUInt32LE(255, b + 44); // namelen
  out.writeUInt32LE(4096, b + 48); // frsize
  return out;
}
