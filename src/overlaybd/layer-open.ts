// Layer blob in, LSMT bytes out — and back. `unwrapLayerBlob` peels the optional tar wrapper
// (blob-tar.ts) and the optional ZFile (zfile.ts) by content, never by name or media type, leaving a
// RandomAccess over the LSMT file for the LSMT reader. `writeLayerBlob` does the reverse for a sealed
// LSMT stream (from commit.ts): ZFile-compress after a reserved tar prefix, finish the tar, hash the
// result off the main thread (digest.ts) and only then give it its final name. Both kinds of worker
// thread are process-wide and kept between blobs; `warmLayerWriters` / `closeLayerWriters` start them
// ahead of need and end them (tests, orderly shutdown).
import { close, open, rename, unlink } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { ObdkitError } from '../util/errors.js';
import { PAX_PAYLOAD_OFFSET, detectTar, encodePaxTarPrefix, tarSuffixLength, type TarPayload } from './blob-tar.js';
import type { ZFileAlgorithm } from './codec.js';
import { closeSharedCompressPool, sharedCompressPool, type CompressPool } from './compress-pool.js';
import { closeHashWorkers, sha256File, warmHashWorkers } from './digest.js';
import { SliceRandomAccess, type RandomAccess } from './io.js';
import { ZFILE_HEADER_SIZE, ZFileReader, looksLikeZFileHeader, type ZFileHeaderInfo } from './zfile.js';
import { writeAll, writeZFile } from './zfile-writer.js';

export interface UnwrappedLayer {
  /** The LSMT file: decompressed view if a ZFile was found, else the (tar payload of the) blob. */
  lsmt: RandomAccess;
  tar: TarPayload | null;
  /** The header/trailer block that supplied the ZFile's index info, or null if not compressed. */
  zfile: ZFileHeaderInfo | null;
}

/**
 * Detects tar → ZFile → raw by content and returns the LSMT view. Bad wrappers raise FormatError; for
 * a tar-wrapped ZFile the error names `<blob>[tar@1536]` and the offset inside that payload.
 */
export function unwrapLayerBlob(ra: RandomAccess): UnwrappedLayer {
  const tar = detectTar(ra);
  const inner = tar ? new SliceRandomAccess(ra, tar.payloadOffset, tar.payloadLength, `${ra.name}[tar@${tar.payloadOffset}]`) : ra;
  if (looksLikeZFileHeader(inner.pread(0, ZFILE_HEADER_SIZE))) {
    const reader = new ZFileReader(inner);
    return { lsmt: reader, tar, zfile: reader.layout.info };
  }
  return { lsmt: inner, tar, zfile: null };
}

export interface LayerBlobOptions {
  /** Compress into a ZFile (the normal case). */
  zfile: boolean;
  algorithm?: ZFileAlgorithm;
  blockSize?: number;
  /** Wrap in the one-member pax+ustar tar that registries receive. */
  tar: boolean;
  /** Rewrite the ZFile header with the index info (what `overlaybd-commit -z` does). Default true. */
  overwriteHeader?: boolean;
  /** Pool to compress on; default the process-wide one (see zfile-writer.ts for `threads`). */
  pool?: CompressPool;
  threads?: number;
}

export interface LayerBlobResult {
  size: number;
  digest: string;
}

function fsCall<T>(fn: (cb: (err: NodeJS.ErrnoException | null, v?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

/**
 * Writes a layer blob from sequential LSMT bytes. The blob is built under a temporary name next to
 * `outPath` and renamed into place only once complete and hashed, so a crash or error never leaves a
 * plausible-looking partial blob at `outPath`.
 */
export async function writeLayerBlob(
  lsmtBytes: AsyncIterable<Uint8Array>, outPath: string, opts: LayerBlobOptions,
): Promise<LayerBlobResult> {
  const tmp = join(dirname(outPath), `.${basename(outPath)}.${process.pid}.${randomBytes(4).toString('hex')}.partial`);
  let fd = -1;
  try {
    fd = await fsCall<number>((cb) => open(tmp, 'wx', 0o644, cb));
    const start = opts.tar ? PAX_PAYLOAD_OFFSET : 0;
    let payloadLength: number;
    if (opts.zfile) {
      const r = await writeZFile(lsmtBytes, fd, start, {
        algorithm: opts.algorithm ?? 'lz4',
        blockSize: opts.blockSize ?? 4096,
        overwriteHeader: opts.overwriteHeader ?? true,
        ...(opts.pool ? { pool: opts.pool } : {}),
        ...(opts.threads ? { threads: opts.threads } : {}),
      });
      payloadLength = r.compressedSize;
    } else {
      payloadLength = 0;
      for await (const chunk of lsmtBytes) {
        await writeAll(fd, chunk, start + payloadLength);
        payloadLength += chunk.length;
      }
    }
    if (opts.tar) {
      await writeAll(fd, encodePaxTarPrefix(payloadLength), 0);
      await writeAll(fd, Buffer.alloc(tarSuffixLength(payloadLength)), start + payloadLength);
    }
    const closing = fd;
    fd = -1;
    await fsCall<void>((cb) => close(closing, cb));
    const { digest, size } = await sha256File(tmp);
    await fsCall<void>((cb) => rename(tmp, outPath, cb));
    return { size, digest };
  } catch (err) {
    if (fd >= 0) await fsCall<void>((cb) => close(fd, cb)).catch(() => {});
    await fsCall<void>((cb) => unlink(tmp, cb)).catch(() => {});
    if (err instanceof ObdkitError) throw err;
    throw new ObdkitError('ELAYERWRITE', `writing layer blob failed: ${err instanceof Error ? err.message : String(err)}`,
      { file: outPath }, { cause: err });
  }
}

/** Starts the shared compression and hash workers now, without waiting, so the next seal finds them loaded. */
export function warmLayerWriters(): void {
  sharedCompressPool().warm();
  warmHashWorkers();
}

/** Terminates the shared compression and hash workers; later writes start new ones. */
export async function closeLayerWriters(): Promise<void> {
  await Promise.all([closeSharedCompressPool(), closeHashWorkers()]);
}
