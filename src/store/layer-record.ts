// What the build remembers about one overlaybd layer blob: enough to stack it as a lower (digest →
// file in the content store), to chain the next layer's parent UUID, and to say where it came from
// (a converted OCI layer keeps its source digest and diffID). Records are plain JSON: they travel
// in the solver's cache index and in the store's per-layer files.

export interface LayerRecord {
  /** `sha256:<hex>` of the blob (also its diffID: an overlaybd blob is an uncompressed tar). */
  digest: string;
  size: number;
  /** LSMT uuid of the sealed layer (upper-case 8-4-4-4-12). */
  uuid: string;
  parentUuid: string;
  diffId: string;
  /** For a layer converted from an ordinary OCI layer: that layer's blob digest and diffID. */
  sourceDigest?: string;
  sourceDiffId?: string;
  /**
   * For a layer of an overlaybd base image that is read lazily: the repository holding the blob
   * (`host[:port]/path`, no tag or digest). Such a blob is not in the content store; devices read it
   * by range from there, and an export to another repository mounts or copies it.
   */
  origin?: { repository: string };
  /** For a layer a build step made: bytes of data the step wrote, and what deduplication dropped. */
  stats?: { writtenBytes: number; identicalBytes: number; zeroedBytes: number; zeroedDroppedBytes: number };
}

export function isLayerRecord(v: unknown): v is LayerRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r['digest'] === 'string' && typeof r['size'] === 'number' && typeof r['uuid'] === 'string' && typeof r['diffId'] === 'string';
}
