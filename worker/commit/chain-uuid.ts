// Deterministic layer UUIDs. The official convertor names layer i by its OCI chain ID (the digest
// chain of diffIDs 0..i): the first 32 hex digits, formatted 8-4-4-4-12. Converted layers here do the
// same with the source image's diffIDs; a layer a build step makes has no source diffID, so its
// chain link is the step's cache key instead. Either way the same input gives the same UUID, and so
// the same blob bytes.
import { createHash } from 'node:crypto';
import { normalizeUuid } from '../../src/overlaybd/uuid.js';

/** OCI chain ID: chain(0) = id0; chain(i) = sha256(chain(i-1) + " " + id_i). */
export function chainId(ids: readonly string[]): string {
  if (ids.length === 0) throw new RangeError('chain of no layers');
  let c = ids[0]!;
  for (let i = 1; i < ids.length; i++) c = 'sha256:' + createHash('sha256').update(`${c} ${ids[i]!}`).digest('hex');
  return c;
}

/** The UUID named by a digest (`sha256:<hex>`): its first 32 hex digits, upper-case. */
export function uuidFromDigest(digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  if (!/^[0-9a-f]{32}/i.test(hex)) throw new RangeError(`not a digest: ${digest}`);
  return normalizeUuid(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`);
}

/** UUID of a layer a build step seals: chain of the lower blobs' digests, then the step's key. */
export function stepLayerUuid(lowerDigests: readonly string[], stepKey: string): string {
  return uuidFromDigest(chainId([...lowerDigests, stepKey]));
}
