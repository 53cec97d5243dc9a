// Packs a root filesystem directory into a reproducible tar+gzip layer: GNU tar in pax format with
// entries sorted by name, numeric owners only, mtimes clamped to a fixed SOURCE_DATE_EPOCH, no
// atime/ctime records, stable extended-header names, and every xattr (security.capability
// included) as SCHILY.xattr records. The tar streams through two hashes (diffID of the tar, digest
// of the gzip) straight into the output file, which appears under its final name only when whole.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { execa } from 'execa';
import { ObdkitError } from '../util/errors.js';

export interface PackOptions {
  /** Upper bound for every mtime, in seconds since the epoch. */
  sourceDateEpoch: number;
  /** gzip level (default 6). */
  level?: number;
}

export interface PackedLayer {
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** sha256 of the gzip file (the blob digest). */
  digest: string;
  /** Size of the gzip file. */
  size: number;
  /** Size of the uncompressed tar. */
  tarBytes: number;
}

/** Passes bytes through unchanged while hashing and counting them. */
class Tally extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

export function tarArguments(epoch: number): string[] {
  return [
    '--create',
    '--file=-',
    '--format=posix',
    '--sort=name',
    '--numeric-owner',
    '--xattrs',
    '--xattrs-include=*',
    `--mtime=@${epoch}`,
    '--clamp-mtime',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
  ];
}

/** Writes `rootDir` as a gzip-compressed tar to `outPath`. Names have no leading `./`. */
export async function packRootfs(rootDir: string, outPath: string, opts: PackOptions): Promise<PackedLayer> {
  if (!Number.isSafeInteger(opts.sourceDateEpoch) || opts.sourceDateEpoch < 0) {
    throw new ObdkitError('EBASE_EPOCH', `invalid SOURCE_DATE_EPOCH ${opts.sourceDateEpoch}`);
  }
  // Top-level names in byte order, as --sort=name orders everything below them.
  const top = (await readdir(rootDir)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const tmp = `${outPath}.tmp-${process.pid}`;
  const proc = execa('tar', [...tarArguments(opts.sourceDateEpoch), `--directory=${rootDir}`, ...(top.length ? ['--', ...top] : ['--files-from=/dev/null'])], {
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: { stdout: false, stderr: true },
    reject: false,
    env: { LC_ALL: 'C' },
  });
  const raw = new Tally();
  const gz = new Tally();
  try {
    await pipeline(proc.stdout!, raw, createGzip({ level: opts.level ?? 6 }), gz, createWriteStream(tmp, { mode: 0o644 }));
    const r = await proc;
    if (r.exitCode !== 0) {
      throw new ObdkitError('EBASE_TAR', `tar exited with ${r.exitCode}: ${String(r.stderr).trim().split('\n').slice(-5).join('; ')}`, {
        file: rootDir,
      });
    }
    await rename(tmp, outPath);
  } catch (err) {
    proc.kill();
    await rm(tmp, { force: true });
    throw err;
  }
  return { diffId: raw.digest(), digest: gz.digest(), size: gz.bytes, tarBytes: raw.bytes };
}
