// Streaming ZFile writer: cuts any byte stream into blocks, compresses them on compress-pool.ts's
// worker threads (the process-wide pool unless told otherwise), and writes header, blocks+CRC, jump
// table and trailer to a file descriptor at a given offset (so layer-open.ts can reserve a tar prefix
// in front). Byte layout and header/trailer sequence follow the reference tools: `overlaybd-commit -z`
// rewrites the header with the final index info (flags 27/22); `overlaybd-zfile` leaves the
// provisional header (19/22). Also `decompressZFile`.
// Input chunks are copied into batch buffers, except that a source marked TRANSFERABLE_CHUNKS (commit.ts)
// has its whole-batch chunks moved to the workers as they are: a layer's bytes are then never copied
// on the main thread.
import { close, open, write } from 'node:fs';
import { ObdkitError } from '../util/errors.js';
import { algorithmCode, type ZFileAlgorithm } from './codec.js';
import { CompressPool, sharedCompressPool, type CompressedBatch } from './compress-pool.js';
import { crc32cRaw } from './crc32c.js';
import type { RandomAccess } from './io.js';
import {
  FLAGS_HEADER_OVERWRITTEN,
  FLAGS_HEADER_PROVISIONAL,
  FLAGS_TRAILER,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  ZFILE_HEADER_SIZE,
  ZFileReader,
  encodeZFileHeaderTrailer,
} from './zfile.js';

/**
 * Marks a source whose chunks are fresh buffers it never touches again (commit.ts's are). The writer
 * then moves a chunk that is exactly one batch, on a batch boundary, to a worker as it is instead of
 * copying it: the chunk is detached (reads as empty) afterwards.
 */
export const TRANSFERABLE_CHUNKS = Symbol('obdkit.transferableChunks');
export interface TransferableChunks {
  readonly [TRANSFERABLE_CHUNKS]: true;
}

function hasTransferableChunks(source: object): boolean {
  return (source as Partial<TransferableChunks>)[TRANSFERABLE_CHUNKS] === true;
}

/** True if `chunk` is the whole of an ordinary ArrayBuffer of `size` bytes, so it can be transferred. */
function isWholeBuffer(chunk: Uint8Array, size: number): boolean {
  return chunk.length === size && chunk.byteOffset === 0 && chunk.buffer.byteLength === size && chunk.buffer instanceof ArrayBuffer;
}

export interface ZFileWriteOptions {
  algorithm?: ZFileAlgorithm;
  /** Uncompressed bytes per block: a power of two, 4 KiB … 32 KiB. Default 4096. */
  blockSize?: number;
  /** Rewrite the header with the final index info, as `overlaybd-commit -z` does. Default true. */
  overwriteHeader?: boolean;
  /**
   * Pool to compress on (left open). Default: the process-wide shared pool, unless `threads` asks for
   * a private pool of that size, which is closed at the end.
   */
  pool?: CompressPool;
  threads?: number;
  /** Uncompressed bytes per worker message, rounded down to whole blocks. Default 1 MiB. */
  batchBytes?: number;
  /** Batches compressed, queued or being written at once; bounds memory whatever the input size. Default 4 × threads. */
  maxInFlight?: number;
}

export interface ZFileWriteResult {
  /** Bytes written from the start position: header … trailer. */
  compressedSize: number;
  originalSize: number;
  blockCount: number;
  /** The final header (512 bytes) as written at the start position. */
  header: Buffer;
  trailer: Buffer;
}

export function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new ObdkitError(
      'EINVAL',
      `ZFile block size ${blockSize} not supported: use a power of two from ${MIN_BLOCK_SIZE} to ${MAX_BLOCK_SIZE}` +
        (blockSize === 65536 ? ' (64 KiB blocks of incompressible data cannot be read back by overlaybd)' : ''),
      { field: 'blockSize' },
    );
  }
}

/** Writes all of `buf` at `position` of `fd`. */
export function writeAll(fd: number, buf: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done >= buf.length) return resolve();
      write(fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) reject(err);
        else step(done + n);
      });
    };
    step(0);
  });
}

/** Growable list of u32 jump-table entries. */
class U32List {
  private arr = new Uint32Array(1024);
  length = 0;
  push(src: Uint32Array): void {
    if (this.length + src.length > this.arr.length) {
      const next = new Uint32Array(Math.max(this.arr.length * 2, this.length + src.length));
      next.set(this.arr.subarray(0, this.length));
      this.arr = next;
    }
    this.arr.set(src, this.length);
    this.length += src.length;
  }
  /** Little-endian bytes of the entries. */
  toBuffer(): Buffer {
    const out = Buffer.alloc(this.length * 4);
    for (let i = 0; i < this.length; i++) out.writeUInt32LE(this.arr[i]!, i * 4);
    return out;
  }
}

/**
 * Compresses `source` into a ZFile written at byte `position` of `fd`. Chunks may have any size; at
 * most `maxInFlight` batches are held in memory at a time, so the input can be far larger than RAM.
 */
export async function writeZFile(
  source: AsyncIterable<Uint8Array>, fd: number, position: number, opts: ZFileWriteOptions = {},
): Promise<ZFileWriteResult> {
  const algorithm = opts.algorithm ?? 'lz4';
  const blockSize = opts.blockSize ?? 4096;
  checkBlockSize(blockSize);
  const ownPool = !opts.pool && opts.threads !== undefined;
  const pool = opts.pool ?? (ownPool ? new CompressPool(opts.threads) : sharedCompressPool());
  const batchBytes = Math.max(blockSize, Math.floor((opts.batchBytes ?? 1 << 20) / blockSize) * blockSize);
  const maxInFlight = Math.max(1, opts.maxInFlight ?? pool.threads * 4);
  const base = {
    blockSize, algo: algorithmCode(algorithm), level: 0, useDict: 0, dictSize: 0, verify: 1,
  };
  // Compressed batches are written with positional writes that may overlap one another; only their
  // number is bounded. Waiting for each write before feeding the workers again would starve them.
  const writes = new Set<Promise<void>>();
  try {
    const provisional = encodeZFileHeaderTrailer({
      ...base, flags: FLAGS_HEADER_PROVISIONAL, indexOffset: 0, indexSize: 0, originalFileSize: 0, indexCrc: 0,
    });
    await writeAll(fd, provisional, position);
    let out = position + ZFILE_HEADER_SIZE;
    const lengths = new U32List();
    const inFlight: Promise<CompressedBatch>[] = [];
    const spare: ArrayBuffer[] = [];
    let originalSize = 0;

    let writeError: unknown;
    const spareOut: ArrayBuffer[] = [];
    const startWrite = (buf: Buffer, at: number, output: ArrayBuffer): void => {
      const p: Promise<void> = writeAll(fd, buf, at).then(
        () => {
          writes.delete(p);
          if (spareOut.length < maxInFlight) spareOut.push(output);
        },
        (err: unknown) => {
          writes.delete(p);
          writeError ??= err;
        },
      );
      writes.add(p);
    };
    const retireOldest = async (): Promise<void> => {
      const batch = await inFlight.shift()!;
      while (writes.size >= maxInFlight) await Promise.race(writes);
      if (writeError) throw writeError;
      startWrite(batch.data, out, batch.output);
      out += batch.data.length;
      lengths.push(batch.lengths);
      if (batch.input.byteLength === batchBytes && spare.length < maxInFlight) spare.push(batch.input);
    };
    const submit = async (buf: ArrayBuffer, len: number): Promise<void> => {
      while (inFlight.length >= maxInFlight) await retireOldest();
      const p = pool.compress(algorithm, blockSize, buf, len, spareOut.pop());
      // A rejection is observed when this batch is retired; until then it must not count as unhandled.
      p.catch(() => {});
      inFlight.push(p);
    };

    const transferable = hasTransferableChunks(source);
    let cur = new ArrayBuffer(batchBytes);
    let view = new Uint8Array(cur);
    let fill = 0;
    const full: Array<[ArrayBuffer, number]> = [];
    const it = source[Symbol.asyncIterator]();
    let pending = it.next();
    try {
      for (;;) {
        const r = await pending;
        if (r.done) break;
        const chunk = r.value;
        if (transferable && fill === 0 && isWholeBuffer(chunk, batchBytes)) {
          full.push([chunk.buffer as ArrayBuffer, batchBytes]);
          originalSize += batchBytes;
        } else {
          for (let off = 0; off < chunk.length; ) {
            const n = Math.min(chunk.length - off, batchBytes - fill);
            view.set(chunk.subarray(off, off + n), fill);
            fill += n;
            off += n;
            if (fill === batchBytes) {
              full.push([cur, fill]);
              originalSize += fill;
              cur = spare.pop() ?? new ArrayBuffer(batchBytes);
              view = new Uint8Array(cur);
              fill = 0;
            }
          }
        }
        // The chunk is copied or moved, so the source is done with it: let it produce the next one
        // (its reads overlap with compression) while the full batches go out.
        pending = it.next();
        pending.catch(() => {});
        for (const [buf, len] of full.splice(0)) await submit(buf, len);
      }
    } catch (err) {
      // Let the source release what it holds (files, buffers); its own error is secondary here.
      void Promise.resolve(it.return?.()).catch(() => {});
      throw err;
    }
    if (fill > 0) {
      await submit(cur, fill);
      originalSize += fill;
    }
    while (inFlight.length > 0) await retireOldest();
    await Promise.all(writes);
    if (writeError) throw writeError;

    const table = lengths.toBuffer();
    const indexOffset = out - position;
    await writeAll(fd, table, out);
    out += table.length;
    const final = { ...base, indexOffset, indexSize: lengths.length, originalFileSize: originalSize, indexCrc: crc32cRaw(table) };
    const trailer = encodeZFileHeaderTrailer({ ...final, flags: FLAGS_TRAILER });
    await writeAll(fd, trailer, out);
    out += trailer.length;
    let header = provisional;
    if (opts.overwriteHeader ?? true) {
      header = encodeZFileHeaderTrailer({ ...final, flags: FLAGS_HEADER_OVERWRITTEN });
      await writeAll(fd, header, position);
    }
    return { compressedSize: out - position, originalSize, blockCount: lengths.length, header, trailer };
  } finally {
    // Never return (or throw) with writes still landing on an fd the caller is about to close.
    await Promise.allSettled(writes);
    if (ownPool) await pool.close();
  }
}

function openFd(path: string, flags: string): Promise<number> {
  return new Promise((resolve, reject) => open(path, flags, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))));
}

function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => close(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * Streams the decompressed content of a ZFile (already unwrapped from any tar) into `out` (a path,
 * created or truncated, or an open fd written from offset 0). Every block CRC is checked.
 * Returns the number of bytes written.
 */
export async function decompressZFile(input: RandomAccess | ZFileReader, out: string | number): Promise<number> {
  const reader = input instanceof ZFileReader ? input : new ZFileReader(input);
  const fd = typeof out === 'number' ? out : await openFd(out, 'w');
  try {
    const step = Math.max(reader.blockSize, 1 << 20);
    for (let off = 0; off < reader.size; off += step) {
      await writeAll(fd, reader.pread(off, step), off);
    }
    return reader.size;
  } finally {
    if (typeof out !== 'number') await closeFd(fd);
  }
}
