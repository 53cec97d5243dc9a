// The I/O seam of every overlaybd format reader: a synchronous positional read.
// Synchronous on purpose: the block device serves FUSE requests from worker threads with blocking
// reads (see worker/device), and the CLI and tests read local files or buffers. Readers never
// buffer whole layers; they ask for the ranges they need.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

export interface RandomAccess {
  /** Total byte length of the underlying object. */
  readonly size: number;
  /** A name for error messages: a path, a digest, or "<name>[inner]" for wrapped content. */
  readonly name: string;
  /** Returns the bytes in [offset, offset+length), clipped at `size` (shorter only at the end). */
  pread(offset: number, length: number): Buffer;
}

export class BufferRandomAccess implements RandomAccess {
  readonly size: number;
  constructor(private readonly buf: Buffer, readonly name = '<buffer>') {
    this.size = buf.length;
  }
  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    return offset >= end ? Buffer.alloc(0) : this.buf.subarray(offset, end);
  }
}

export class FileRandomAccess implements RandomAccess {
  readonly size: number;
  private fd: number;
  constructor(readonly name: string, fd?: number) {
    this.fd = fd ?? openSync(name, 'r');
    this.size = fstatSync(this.fd).size;
  }
  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(end - offset);
    let done = 0;
    while (done < out.length) {
      const n = readSync(this.fd, out, done, out.length - done, offset + done);
      if (n === 0) return out.subarray(0, done);
      done += n;
    }
    return out;
  }
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** A window [start, start+size) of another RandomAccess, e.g. the payload of a tar-wrapped blob. */
export class SliceRandomAccess implements RandomAccess {
  constructor(
    private readonly base: RandomAccess,
    private readonly start: number,
    readonly size: number,
    readonly name = `${base.name}[${start}+${size}]`,
  ) {}
  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    return this.base.pread(this.start + offset, end - offset);
  }
}
