// ADD of a URL: downloads with undici into a temp file outside the rootfs, hashing as it streams,
// verifies `--checksum` (sha256/sha384/sha512, "ALGO:HEX") before anything reaches the rootfs, and
// reports the name and Last-Modified time that Docker uses for the placed file.
import { createHash } from 'node:crypto';
import { createWriteStream, rmSync } from 'node:fs';
import { posix } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { request } from 'undici';
import { ObdkitError } from '../../src/util/errors.js';

export interface Download {
  /** Base name from the URL path (Docker's rule); empty when the URL path ends with `/`. */
  filename: string;
  /** From Last-Modified, when the server sent one. */
  mtime?: Date;
  /** sha256:HEX of the content. */
  digest: string;
  size: number;
}

const ALGOS = new Set(['sha256', 'sha384', 'sha512']);
const MAX_REDIRECTS = 10;

export function parseChecksum(checksum: string): { algo: string; hex: string } {
  const m = /^([a-z0-9]+):([0-9a-f]+)$/.exec(checksum.trim());
  if (m === null || !ALGOS.has(m[1]!)) {
    throw new ObdkitError('ECHECKSUM', `unsupported checksum ${checksum}: want sha256:, sha384: or sha512: and hex`, {
      field: 'checksum',
    });
  }
  return { algo: m[1]!, hex: m[2]! };
}

/** Downloads `url` to `file`. On checksum mismatch or HTTP error the file is removed and an ObdkitError thrown. */
export async function download(url: string, file: string, opts: { checksum?: string; signal?: AbortSignal } = {}): Promise<Download> {
  const want = opts.checksum !== undefined ? parseChecksum(opts.checksum) : undefined;
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await request(current, { method: 'GET', ...(opts.signal ? { signal: opts.signal } : {}) });
    if (res.statusCode >= 300 && res.statusCode < 400 && typeof res.headers.location === 'string') {
      await res.body.dump();
      current = new URL(res.headers.location, current).toString();
      continue;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new ObdkitError('EFETCH', `GET ${url}: HTTP ${res.statusCode}`, { ref: url, status: res.statusCode });
    }
    const sha256 = createHash('sha256');
    const check = want !== undefined && want.algo !== 'sha256' ? createHash(want.algo) : undefined;
    let size = 0;
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        sha256.update(chunk);
        check?.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(res.body, hasher, createWriteStream(file, { mode: 0o600 }));
    } catch (err) {
      rmSync(file, { force: true });
      throw new ObdkitError('EFETCH', `GET ${url}: ${(err as Error).message}`, { ref: url }, { cause: err });
    }
    const sha256hex = sha256.digest('hex');
    const gotHex = check !== undefined ? check.digest('hex') : sha256hex;
    if (want !== undefined && gotHex !== want.hex) {
      rmSync(file, { force: true });
      throw new ObdkitError('ECHECKSUM', `digest mismatch for ${url}: expected ${want.algo}:${want.hex}, got ${want.algo}:${gotHex}`, {
        ref: url,
      });
    }
    const lm = res.headers['last-modified'];
    const mtime = typeof lm === 'string' ? new Date(lm) : undefined;
    // Named after the URL that was asked for, not where redirects led.
    const path = new URL(url).pathname;
    return {
      filename: path.endsWith('/') ? '' : posix.basename(decodeURIComponent(path)),
      ...(mtime !== undefined && !Number.isNaN(mtime.getTime()) ? { mtime } : {}),
      digest: `sha256:${sha256hex}`,
      size,
    };
  }
  throw new ObdkitError('EFETCH', `GET ${url}: too many redirects`, { ref: url });
}
