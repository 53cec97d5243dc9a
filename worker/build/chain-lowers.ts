// From a layer chain (LayerRecords, bottom first) to the lower layers of a device or of a seal: a blob
// in the content store is a local file; a blob that only its origin repository holds (a layer of an
// overlaybd base image, image-source.ts) is a remote lower, read by range through the process's
// RegistryFetcher into one chunk cache under the store root. A local copy always wins, so a blob
// downloaded later (remote-blobs.ts `ensureLocalBlob`) is read from disk from then on.
import { join } from 'node:path';
import type { RegistryClient } from '../../src/registry/client.js';
import { isLoopbackHost } from '../../src/registry/reference.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import { ObdkitError } from '../../src/util/errors.js';
import type { LowerSpec } from '../device/lower-source.js';
import { repoBlobUrl } from '../device/registry-fetcher.js';
import { originReference } from './remote-blobs.js';

export interface ChainLowersOptions {
  /**
   * Decides http or https per registry host (its `insecure` settings). The device's own fetcher
   * talks to the registry with its own client; the scheme here only matters to a fetcher that has
   * none. Default: http for loopback hosts, https otherwise.
   */
  registry?: RegistryClient;
}

/** The chunk cache directory of remote lowers: one per store, owned by the process's fetcher. */
export function remoteCacheDir(store: ContentStore): string {
  return join(store.root, 'remote-cache');
}

/** True if a device can read the layer: its blob is in the store, or a repository is known for it. */
export function layerAvailable(store: ContentStore, rec: LayerRecord): boolean {
  return store.hasBlob(rec.digest) || rec.origin !== undefined;
}

/** Lower specs for `layers` (bottom first), in the same order. */
export function chainLowers(store: ContentStore, layers: readonly LayerRecord[], opts: ChainLowersOptions = {}): LowerSpec[] {
  return layers.map((l): LowerSpec => {
    if (store.hasBlob(l.digest)) return { kind: 'file', path: store.blobPath(l.digest) };
    if (!l.origin) {
      throw new ObdkitError('ENOBLOB', 'layer blob is not in the content store and has no origin repository to read it from', {
        ref: l.digest,
        file: store.blobPath(l.digest),
      });
    }
    const ref = originReference(l);
    const url = opts.registry ? repoBlobUrl(opts.registry, ref) : `${isLoopbackHost(ref.host) ? 'http' : 'https'}://${ref.host}/v2/${ref.repository}/blobs`;
    return { kind: 'remote', digest: l.digest, size: l.size, dir: remoteCacheDir(store), repoBlobUrl: url };
  });
}
