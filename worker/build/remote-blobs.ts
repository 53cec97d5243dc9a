// Layer blobs that live in a registry rather than in the content store: the layers of an overlaybd
// base image, which devices read lazily (chain-lowers.ts). Two things need more than ranges of
// such a blob:
//  - its LSMT identity (uuid, parent uuid), which the next layer's header chains to: read from the
//    LSMT header through a few HTTP range requests (tar header, ZFile header and jump table, block 0)
//    by running the ordinary synchronous parsers over a RandomAccess that faults ranges in;
//  - its bytes as a whole, for outputs that carry them (OCI/docker archives): `ensureLocalBlob`
//    downloads it into the content store, verified by digest.
import { rm } from 'node:fs/promises';
import type { RandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { HT_SPACE, isDataFile, isHeader, parseHeaderTrailer } from '../../src/overlaybd/lsmt-header.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { downloadBlob } from '../../src/registry/pull.js';
import { parseReference, type ImageReference } from '../../src/registry/reference.js';
import { RemoteBlob } from '../../src/registry/remote-blob.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import { FormatError, ObdkitError } from '../../src/util/errors.js';

/** Unit of the range requests made while parsing: one window covers tar + ZFile header + block 0. */
const WINDOW = 64 * 1024;
/** Parse attempts before giving up (each one faults in one more range). */
const MAX_FAULTS = 16;

/** `host[:port]/path` of a reference, as LayerRecord.origin keeps it. */
export function originRepository(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}`;
}

/** The reference (no tag, no digest) of a layer's origin repository. */
export function originReference(rec: LayerRecord): ImageReference {
  if (!rec.origin) throw new ObdkitError('ENOBLOB', 'layer blob is neither in the content store nor in a known repository', { ref: rec.digest });
  const r = parseReference(rec.origin.repository);
  return { registry: r.registry, host: r.host, repository: r.repository };
}

/** Raised by FaultingRandomAccess for bytes not fetched yet; never leaves readLayerIdentity. */
class MissingRange extends Error {
  constructor(readonly offset: number, readonly end: number) {
    super(`range [${offset}, ${end}) not fetched`);
  }
}

/** A RandomAccess over the windows fetched so far; any other read throws MissingRange. */
class FaultingRandomAccess implements RandomAccess {
  private readonly windows: { start: number; bytes: Buffer }[] = [];

  constructor(readonly size: number, readonly name: string) {}

  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    for (const w of this.windows) {
      if (offset >= w.start && end <= w.start + w.bytes.length) return Buffer.from(w.bytes.subarray(offset - w.start, end - w.start));
    }
    throw new MissingRange(offset, end);
  }

  /** Fetches whole windows around [offset, end), kept inside the blob so the tail needs one request. */
  async fill(blob: RemoteBlob, offset: number, end: number): Promise<void> {
    let start = Math.floor(offset / WINDOW) * WINDOW;
    let stop = Math.ceil(end / WINDOW) * WINDOW;
    if (stop > this.size) {
      start = Math.max(0, Math.min(start, this.size - (stop - start)));
      stop = this.size;
    }
    const bytes = await blob.read(start, stop - start);
    if (bytes.length !== stop - start) {
      throw new FormatError(`registry answered ${bytes.length} of ${stop - start} bytes`, { file: this.name, offset: start + bytes.length });
    }
    this.windows.push({ start, bytes });
  }
}

export interface LayerIdentity {
  uuid: string;
  parentUuid: string;
  /** Bytes received to find it out. */
  fetchedBytes: number;
}

/** uuid and parent uuid from the LSMT header of a registry blob, read by range. */
export async function readLayerIdentity(client: RegistryClient, ref: ImageReference, digest: string, size: number): Promise<LayerIdentity> {
  const blob = new RemoteBlob(client, ref, digest, { size });
  const ra = new FaultingRandomAccess(size, `${originRepository(ref)}@${digest}`);
  for (let attempt = 0; attempt < MAX_FAULTS; attempt++) {
    try {
      const header = parseHeaderTrailer(unwrapLayerBlob(ra).lsmt.pread(0, HT_SPACE), ra.name, 0);
      if (!isHeader(header) || !isDataFile(header)) {
        throw new FormatError(`LSMT header flags 0x${header.flags.toString(16)} lack HEADER or DATA`, { file: ra.name, offset: 0, field: 'flags' });
      }
      return { uuid: header.uuid, parentUuid: header.parentUuid, fetchedBytes: blob.stats.networkBytes };
    } catch (err) {
      if (!(err instanceof MissingRange)) throw err;
      await ra.fill(blob, err.offset, err.end);
    }
  }
  throw new ObdkitError('EREMOTE', `LSMT header not found within ${MAX_FAULTS} range requests`, { ref: ra.name });
}

/**
 * The content-store path of a layer's blob, downloading it first (from `record.origin`, verified by
 * digest and size) when the store does not hold it. Concurrent calls for one digest download once.
 */
export async function ensureLocalBlob(store: ContentStore, record: LayerRecord, client: RegistryClient): Promise<string> {
  if (store.hasBlob(record.digest)) return store.blobPath(record.digest);
  const ref = originReference(record);
  return store.locks.run(`blob:${record.digest}`, async () => {
    if (store.hasBlob(record.digest)) return store.blobPath(record.digest);
    const tmp = store.tmpPath('pull');
    try {
      await downloadBlob(client, ref, record.digest, tmp, record.size);
      return await store.adoptBlob(tmp, record.digest, record.size);
    } finally {
      await rm(tmp, { force: true });
    }
  });
}
