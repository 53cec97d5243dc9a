// Content digests (`algorithm:hex`) as used by every OCI descriptor, blob URL and cache file name.
// Only sha256 and sha512 are accepted: they are the algorithms registries verify. The registry
// client verifies streamed blobs with `digestHasher`, and the blob cache names files by `digestHex`.
import { createHash, type Hash } from 'node:crypto';
import { ObdkitError } from '../util/errors.js';

export type DigestAlgorithm = 'sha256' | 'sha512';

const hexLength: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

export function isDigest(s: string): boolean {
  const m = /^(sha256|sha512):([0-9a-f]+)$/.exec(s);
  return m !== null && m[2]!.length === hexLength[m[1] as DigestAlgorithm];
}

export function parseDigest(s: string, context: Record<string, string> = {}): { algorithm: DigestAlgorithm; hex: string } {
  if (!isDigest(s)) {
    throw new ObdkitError('EDIGEST', `invalid digest ${JSON.stringify(s)} (expected sha256:<64 hex> or sha512:<128 hex>)`, context);
  }
  const [algorithm, hex] = s.split(':') as [DigestAlgorithm, string];
  return { algorithm, hex };
}

export function digestHasher(digest: string): Hash {
  return createHash(parseDigest(digest).algorithm);
}

export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A filesystem-safe name for a digest: `sha256-<hex>`. */
export function digestFileName(digest: string): string {
  const { algorithm, hex } = parseDigest(digest);
  return `${algorithm}-${hex}`;
}
