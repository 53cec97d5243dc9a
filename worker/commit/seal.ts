// Sealing one step: the writable RW pair a device left behind, minus what the lowers already hold
// (dedup.ts, on a worker thread), becomes a committed LSMT layer (src/overlaybd/commit.ts), ZFile-compressed with LZ4
// in 4 KiB blocks and tar-wrapped (src/overlaybd/layer-open.ts), hashed and moved into the content
// store under its digest. A step that changed nothing visible yields no layer at all.
// Lowers may be registry blobs (a lazily read base image): the comparison then reads their ranges
// through the caller's RemoteFetcher, the one serving the step's device, whose chunk cache already
// holds most of what the device read. Without one, a fetcher of its own (plain registry client,
// Docker config credentials, a throwaway cache) is used for this seal only.
import { rm } from 'node:fs/promises';
import { commitLayer } from '../../src/overlaybd/commit.js';
import { writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { NULL_UUID } from '../../src/overlaybd/uuid.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import type { LowerSpec } from '../device/lower-source.js';
import type { RemoteFetcher } from '../device/remote-channel.js';
import { RegistryFetcher } from '../device/registry-fetcher.js';
import { filteredView, type DedupResult, type DedupStats } from './dedup.js';
import { dedupInWorker } from './dedup-worker.js';
import { lowerSpecOf } from './lower-blobs.js';

export interface SealInput {
  /** The RW pair (data, index) of the step's writable layer, no longer in use by a device. */
  upper: { data: string; index: string };
  /**
   * Lower layer blobs (tar/ZFile/LSMT as stored), bottom first: a path is a local blob, a LowerSpec
   * may also name a registry blob (worker/build/chain-lowers.ts makes them).
   */
  lowers: readonly (string | LowerSpec)[];
  /** Reads ranges of remote lowers (the fetcher of the step's device). */
  remote?: RemoteFetcher;
  uuid: string;
  parentUuid?: string;
  /** Commit message stored in the LSMT header (≤ 256 bytes). */
  userTag?: string;
  store: ContentStore;
  /** Skip the comparison with the lowers (keep every written block). */
  noDedup?: boolean;
}

export interface SealOutcome {
  /** Undefined when nothing was left to store. */
  layer?: LayerRecord;
  stats: DedupStats;
}

export async function sealStep(input: SealInput): Promise<SealOutcome> {
  // The comparison runs on a worker thread; the RW pair is only read, by both threads.
  const kept = input.noDedup ? undefined : await dedup(input);
  const rw = RwLayer.open(input.upper.data, input.upper.index, { readOnly: true });
  try {
    const { mappings, stats } = kept ?? { mappings: rw.mappings(), stats: { writtenBytes: 0, identicalBytes: 0, zeroedBytes: 0, zeroedDroppedBytes: 0 } };
    if (mappings.length === 0) return { stats };
    const view = filteredView(rw, mappings);
    const parentUuid = input.parentUuid ?? NULL_UUID;
    const tmp = input.store.tmpPath('layer');
    const blob = await writeLayerBlob(
      commitLayer(view, { uuid: input.uuid, parentUuid, ...(input.userTag !== undefined ? { userTag: Buffer.from(input.userTag).subarray(0, 256) } : {}) }),
      tmp,
      { zfile: true, tar: true, algorithm: 'lz4', blockSize: 4096 },
    );
    await input.store.adoptBlob(tmp, blob.digest, blob.size);
    const layer: LayerRecord = { digest: blob.digest, size: blob.size, uuid: input.uuid, parentUuid, diffId: blob.digest, stats };
    await input.store.putLayer(layer);
    return { layer, stats };
  } finally {
    rw.close();
  }
}

async function dedup(input: SealInput): Promise<DedupResult> {
  const lowers = input.lowers.map(lowerSpecOf);
  if (input.remote || !lowers.some((l) => l.kind === 'remote')) {
    return dedupInWorker(input.upper, lowers, input.remote ? { remote: input.remote } : {});
  }
  // A chunk cache directory belongs to one fetcher at a time, so this one gets its own.
  const dir = input.store.tmpPath('seal-cache');
  const own = lowers.map((l): LowerSpec => (l.kind === 'remote' ? { ...l, dir } : l));
  const fetcher = new RegistryFetcher(own);
  try {
    return await dedupInWorker(input.upper, own, { remote: fetcher });
  } finally {
    await fetcher.close();
    await rm(dir, { recursive: true, force: true });
  }
}
