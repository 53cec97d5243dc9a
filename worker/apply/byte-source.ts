// Pull-based reading of a byte stream in exact amounts, for the tar reader. Every byte that passes
// through is counted and fed to a sha256, so the layer's diffID (digest of the uncompressed tar)
// comes out of the same single pass that applies it. Chunks are handed out as views of the
// stream's own buffers: nothing is copied or accumulated beyond one header.
import { createHash, type Hash } from 'node:crypto';
import { FormatError } from '../../src/util/errors.js';

export class ByteSource {
  private readonly it: AsyncIterator<Buffer>;
  private chunk: Buffer = Buffer.alloc(0);
  private readonly hash: Hash = createHash('sha256');
  private ended = false;
  /** Bytes handed out (or skipped) so far: the offset of the next byte. */
  position = 0;
  /** Bytes pulled from the stream so far (hashed). */
  pulled = 0;

  constructor(input: AsyncIterable<Buffer | Uint8Array | string>) {
    const inner = input[Symbol.asyncIterator]();
    this.it = {
      next: async () => {
        const r = await inner.next();
        if (r.done) return { done: true, value: undefined };
        const v = r.value;
        const b = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
        return { done: false, value: b };
      },
      return: async () => {
        await inner.return?.();
        return { done: true, value: undefined };
      },
    };
  }

  /** Makes sure some unread bytes are buffered; false at end of stream. */
  private async fill(): Promise<boolean> {
    while (this.chunk.length === 0) {
      if (this.ended) return false;
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        return false;
      }
      this.hash.update(r.value);
      this.pulled += r.value.length;
      this.chunk = r.value;
    }
    return true;
  }

  private take(n: number): Buffer {
    const out = this.chunk.subarray(0, n);
    this.chunk = this.chunk.subarray(n);
    this.position += out.length;
    return out;
  }

  /** Up to `max` bytes (at least one), or null at end of stream. */
  async readUpTo(max: number): Promise<Buffer | null> {
    if (!(await this.fill())) return null;
    return this.take(Math.min(max, this.chunk.length));
  }

  /** Exactly `n` bytes; throws if the stream ends first. */
  async readExact(n: number, file: string): Promise<Buffer> {
    const r = await this.readBlockOrEnd(n, file);
    if (r === null) throw new FormatError(`stream ends where ${n} more bytes were expected`, { file, offset: this.position });
    return r;
  }

  /** Exactly `n` bytes, or null if the stream ends right here; throws on a partial read. */
  async readBlockOrEnd(n: number, file: string): Promise<Buffer | null> {
    if (!(await this.fill())) return null;
    if (this.chunk.length >= n) return this.take(n);
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      if (!(await this.fill())) throw new FormatError(`stream ends inside a ${n}-byte block`, { file, offset: this.position });
      const b = this.take(Math.min(n - got, this.chunk.length));
      parts.push(b);
      got += b.length;
    }
    return Buffer.concat(parts, n);
  }

  async skip(n: number, file: string): Promise<void> {
    while (n > 0) {
      const b = await this.readUpTo(n);
      if (b === null) throw new FormatError(`stream ends ${n} bytes early`, { file, offset: this.position });
      n -= b.length;
    }
  }

  /** Reads (and hashes) whatever is left, e.g. the zero blocks after the end-of-archive marker. */
  async drain(): Promise<void> {
    this.position += this.chunk.length;
    this.chunk = Buffer.alloc(0);
    while (await this.fill()) {
      this.position += this.chunk.length;
      this.chunk = Buffer.alloc(0);
    }
  }

  /** Stops reading early (on error): releases the underlying stream. */
  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.it.return?.();
    }
  }

  /** `sha256:<hex>` of every byte pulled; only meaningful after drain(). */
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}
