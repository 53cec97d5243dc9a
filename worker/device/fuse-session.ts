// Answers FUSE requests for a filesystem that holds exactly one regular file, the disk image.
// One FuseSession per worker thread; it is synchronous and keeps no per-request state, so any
// worker may take any request. The bytes of the file come from a BlockBackend (backend.ts).
import {
  attrReply,
  DT_DIR,
  DT_REG,
  dirent,
  entryReply,
  Errno,
  errorReply,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  FOPEN_KEEP_CACHE,
  FUSE_ROOT_ID,
  IN_HEADER_SIZE,
  initReply,
  Op,
  OUT_HEADER_SIZE,
  openReply,
  readInitIn,
  requestNodeId,
  requestOpcode,
  requestUnique,
  reply,
  S_IFDIR,
  S_IFREG,
  statfsReply,
  WRITE_DATA_OFFSET,
  writeOutHeaderFrom,
  type Attr,
} from './fuse-proto.js';
import type { BlockBackend } from './backend.js';

const FILE_INO = 2;
const ATTR_VALID_SEC = 3600;

export interface SessionEvents {
  onInit?(minor: number, flags: number): void;
  onError?(op: number, err: unknown): void;
}

export class FuseSession {
  private readonly readBuf: Buffer;
  private readonly writeOut = Buffer.alloc(OUT_HEADER_SIZE + 8);
  private readonly emptyOut = Buffer.alloc(OUT_HEADER_SIZE);
  private readonly mtime = Math.floor(Date.now() / 1000);

  constructor(
    private readonly backend: BlockBackend,
    private readonly fileName: string,
    private readonly events: SessionEvents = {},
    maxRead = 1024 * 1024,
  ) {
    this.readBuf = Buffer.allocUnsafe(OUT_HEADER_SIZE + maxRead);
  }

  /** Returns the reply to write back, or null for requests that take none. */
  handle(req: Buffer): Buffer | null {
    const op = requestOpcode(req);
    try {
      // The I/O requests first, without BigInt or allocation.
      if (op === Op.READ) return this.read(req);
      if (op === Op.WRITE) return this.write(req);
      return this.dispatch(op, requestUnique(req), requestNodeId(req), req);
    } catch (err) {
      this.events.onError?.(op, err);
      return errorReply(requestUnique(req), Errno.EIO);
    }
  }

  private empty(req: Buffer, error = 0): Buffer {
    writeOutHeaderFrom(this.emptyOut, req, error);
    return this.emptyOut;
  }

  private dispatch(op: number, unique: bigint, node: number, req: Buffer): Buffer | null {
    switch (op) {
      case Op.INIT: {
        const r = initReply(unique, readInitIn(req));
        this.events.onInit?.(r.minor, r.flags);
        return r.out;
      }
      case Op.LOOKUP: {
        const end = req.indexOf(0, IN_HEADER_SIZE);
        const name = req.toString('utf8', IN_HEADER_SIZE, end < 0 ? req.length : end);
        if (node !== FUSE_ROOT_ID || name !== this.fileName) return errorReply(unique, Errno.ENOENT);
        return entryReply(unique, this.attr(FILE_INO)!, ATTR_VALID_SEC);
      }
      case Op.GETATTR:
      case Op.SETATTR: {
        const a = this.attr(node);
        return a ? attrReply(unique, a, ATTR_VALID_SEC) : errorReply(unique, Errno.ENOENT);
      }
      case Op.OPEN:
        return openReply(unique, FOPEN_KEEP_CACHE);
      case Op.OPENDIR:
        return openReply(unique, 0);
      case Op.FALLOCATE:
        return this.fallocate(unique, req);
      case Op.FSYNC:
      case Op.SYNCFS:
        this.backend.flush();
        return this.empty(req);
      case Op.READDIR:
        return this.readdir(unique, req);
      case Op.STATFS:
        return statfsReply(unique, this.backend.size);
      case Op.RELEASE:
      case Op.RELEASEDIR:
      case Op.FLUSH:
      case Op.FSYNCDIR:
      case Op.ACCESS:
      case Op.DESTROY:
        return this.empty(req);
      case Op.FORGET:
      case Op.BATCH_FORGET:
      case Op.INTERRUPT:
        return null;
      default:
        // Includes STATX (sent even at 7.31) and xattr calls: ENOSYS makes the kernel stop asking.
        return errorReply(unique, Errno.ENOSYS);
    }
  }

  private attr(node: number): Attr | null {
    if (node === FUSE_ROOT_ID) return { ino: FUSE_ROOT_ID, size: 0, mode: S_IFDIR | 0o755, nlink: 2, mtimeSec: this.mtime };
    if (node === FILE_INO) {
      const mode = S_IFREG | (this.backend.writable ? 0o600 : 0o400);
      return { ino: FILE_INO, size: this.backend.size, mode, nlink: 1, mtimeSec: this.mtime };
    }
    return null;
  }

  private read(req: Buffer): Buffer {
    const offset = readU64(req, IN_HEADER_SIZE + 8);
    const size = req.readUInt32LE(IN_HEADER_SIZE + 16);
    const len = Math.max(0, Math.min(size, this.backend.size - offset));
    const out = len + OUT_HEADER_SIZE <= this.readBuf.length ? this.readBuf.subarray(0, OUT_HEADER_SIZE + len) : Buffer.allocUnsafe(OUT_HEADER_SIZE + len);
    if (len > 0) this.backend.readInto(offset, out.subarray(OUT_HEADER_SIZE));
    writeOutHeaderFrom(out, req, 0);
    return out;
  }

  private write(req: Buffer): Buffer {
    if (!this.backend.writable) return this.empty(req, -Errno.EROFS);
    const offset = readU64(req, IN_HEADER_SIZE + 8);
    const size = req.readUInt32LE(IN_HEADER_SIZE + 16);
    if (offset + size > this.backend.size) return this.empty(req, -Errno.ENOSPC);
    this.backend.write(offset, req.subarray(WRITE_DATA_OFFSET, WRITE_DATA_OFFSET + size));
    const out = this.writeOut;
    writeOutHeaderFrom(out, req, 0);
    out.writeUInt32LE(size, OUT_HEADER_SIZE);
    return out;
  }

  private fallocate(unique: bigint, req: Buffer): Buffer {
    const offset = readU64(req, IN_HEADER_SIZE + 8);
    const length = readU64(req, IN_HEADER_SIZE + 16);
    const mode = req.readUInt32LE(IN_HEADER_SIZE + 24);
    if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) {
      return errorReply(unique, Errno.EOPNOTSUPP);
    }
    if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) === 0) return reply(unique, 0); // preallocation: nothing to do
    if (!this.backend.writable) return errorReply(unique, Errno.EROFS);
    const end = Math.min(this.backend.size, offset + length);
    if (end > offset) this.backend.discard(offset, end - offset);
    return reply(unique, 0);
  }

  private readdir(unique: bigint, req: Buffer): Buffer {
    const from = readU64(req, IN_HEADER_SIZE + 8);
    const size = req.readUInt32LE(IN_HEADER_SIZE + 16);
    const entries: Array<[number, string, number]> = [
      [FUSE_ROOT_ID, '.', DT_DIR],
      [FUSE_ROOT_ID, '..', DT_DIR],
      [FILE_INO, this.fileName, DT_REG],
    ];
    const parts: Buffer[] = [];
    let used = 0;
    for (let i = from; i < entries.length; i++) {
      const [ino, name, type] = entries[i]!;
      const d = dirent(ino, i + 1, name, type);
      if (used + d.length > size) break;
      parts.push(d);
      used += d.length;
    }
    const out = reply(unique, used);
    Buffer.concat(parts).copy(out, OUT_HEADER_SIZE);
    return out;
  }
}

/** Byte offsets stay far below 2^53. */
function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 2 ** 32;
}
