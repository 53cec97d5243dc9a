// FROM an image: the layer chain a build step stacks on.
//  - An overlaybd image (every layer carries the overlaybd annotations) is used as is and read lazily:
//    nothing is downloaded; each layer's record names the repository its blob is read from by range
//    (chain-lowers.ts), and only its LSMT header is fetched here, for the uuid chain.
//  - An ordinary OCI/Docker image is converted once, layer by layer, the way the official convertor
//    does: layer 0 is a fresh ext4 (mkfs on an empty device), each tar layer is applied onto the
//    mounted filesystem (whiteouts become deletions) and sealed into one overlaybd layer whose UUID
//    comes from the source chain ID. Each converted layer is cached by the chain of source layer
//    digests up to it, so images sharing a base share its conversion.
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { isOverlaybdManifest, OverlaybdAnnotation } from '../../src/oci/overlaybd.js';
import type { Platform } from '../../src/oci/types.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { downloadBlob, resolveImage } from '../../src/registry/pull.js';
import { parseReference, type ImageReference } from '../../src/registry/reference.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import { ObdkitError } from '../../src/util/errors.js';
import { applyLayerFileInWorker } from '../apply/apply-in-worker.js';
import type { BlockSnapshotter } from '../device/snapshotter.js';
import type { RemoteFetcher } from '../device/remote-channel.js';
import { chainId, uuidFromDigest } from '../commit/chain-uuid.js';
import { originRepository, readLayerIdentity } from './remote-blobs.js';
import type { LayersResult } from './result.js';
import { runOnWritableDevice, type DevicePool } from './step-device.js';

export interface ImageSourceDeps {
  store: ContentStore;
  snapshotter: BlockSnapshotter;
  registry: RegistryClient;
  /** Progress lines ("converting layer 2/5 ..."). */
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** Keeps the conversion device alive for the next source layer or the build's first step. */
  pool?: DevicePool;
  /** Reads ranges of layers that live in a registry (for the seal's comparison with lowers). */
  remote?: RemoteFetcher;
}

/** The overlaybd layer chain for `ref` (bottom first). */
export async function imageLayers(ref: string, platform: Platform, deps: ImageSourceDeps): Promise<LayerRecord[]> {
  const imageRef = parseReference(ref);
  const img = await resolveImage(deps.registry, imageRef, platform);
  const layers = img.manifest.layers;
  if (isOverlaybdManifest(img.manifest)) {
    const out: LayerRecord[] = [];
    // Acceleration layers are not part of the filesystem (image-lowers.ts leaves them out too).
    for (const d of layers.filter((l) => l.annotations?.[OverlaybdAnnotation.accelerationLayer] !== 'yes')) {
      deps.signal?.throwIfAborted();
      out.push(await overlaybdLayerRecord(imageRef, d.digest, d.size, deps));
    }
    return out;
  }
  const diffIds = img.config.rootfs.diff_ids;
  if (diffIds.length !== layers.length) {
    throw new ObdkitError('EIMAGE', `image config lists ${diffIds.length} diff_ids for ${layers.length} layers`, { ref });
  }
  const out: LayerRecord[] = [];
  for (let i = 0; i < layers.length; i++) {
    deps.signal?.throwIfAborted();
    const chain = layers.slice(0, i + 1).map((l) => l.digest);
    const rec = await deps.store.locks.run(`convert:${chain.join(',')}`, async () => {
      const have = await deps.store.getConverted(chain);
      if (have) return have;
      deps.log?.(`converting layer ${i + 1}/${layers.length} ${layers[i]!.digest}`);
      const made = await convertLayer(imageRef, layers[i]!.digest, layers[i]!.size, diffIds.slice(0, i + 1), out, deps);
      await deps.store.putConverted(chain, made);
      return made;
    });
    out.push(rec);
  }
  return out;
}

/**
 * The record of one overlaybd base layer, made without downloading the blob: digest and size from the
 * manifest, uuid and parent uuid from the LSMT header read by range. A blob the store already holds
 * is used from there (local wins, no origin); otherwise the record names the repository it was found
 * in, which is refreshed on every resolve (the same blob may be reached through another repository).
 */
async function overlaybdLayerRecord(ref: ImageReference, digest: string, size: number, deps: ImageSourceDeps): Promise<LayerRecord> {
  return deps.store.locks.run(`blob:${digest}`, async () => {
    const local = deps.store.hasBlob(digest);
    const repository = originRepository(ref);
    const known = await deps.store.getLayer(digest);
    if (known) {
      const rec: LayerRecord = { ...known };
      if (local) delete rec.origin;
      else rec.origin = { repository };
      if (rec.origin?.repository !== known.origin?.repository) await deps.store.putLayer(rec);
      return rec;
    }
    let uuid: string;
    let parentUuid: string;
    if (local) {
      const f = new FileRandomAccess(deps.store.blobPath(digest));
      try {
        const sealed = openSealedLayer(unwrapLayerBlob(f).lsmt);
        uuid = sealed.uuid;
        parentUuid = sealed.parentUuid;
      } finally {
        f.close();
      }
    } else {
      const id = await readLayerIdentity(deps.registry, ref, digest, size);
      deps.log?.(`overlaybd layer ${digest} (${size} bytes) read lazily from ${repository}`);
      uuid = id.uuid;
      parentUuid = id.parentUuid;
    }
    const rec: LayerRecord = { digest, size, uuid, parentUuid, diffId: digest, ...(local ? {} : { origin: { repository } }) };
    await deps.store.putLayer(rec);
    return rec;
  });
}

async function convertLayer(
  ref: ImageReference,
  digest: string,
  size: number,
  diffIds: string[],
  below: readonly LayerRecord[],
  deps: ImageSourceDeps,
): Promise<LayerRecord> {
  const { store } = deps;
  // The source layer is fetched (and its digest verified) to a file first, then applied by a worker
  // thread: this process also serves the FUSE device under the mount, so its main thread must never
  // block in syscalls on that filesystem.
  const source = store.tmpPath('source-layer');
  await mkdir(dirname(source), { recursive: true });
  try {
    await downloadBlob(deps.registry, ref, digest, source, size);
    const parent: LayersResult = { kind: 'layers', layers: [...below], steps: [] };
    // The device goes on to the next source layer, or to the build's first step, through the pool.
    const step = await runOnWritableDevice(
      deps,
      parent,
      digest,
      `converted from ${digest}`,
      async (rootfs) => {
        const applied = await applyLayerFileInWorker(source, rootfs, { name: digest });
        if (applied.diffId !== diffIds[diffIds.length - 1]) {
          throw new ObdkitError('EDIFFID', `layer uncompresses to ${applied.diffId}, the image config says ${diffIds[diffIds.length - 1]}`, { ref: digest });
        }
      },
      deps.pool,
      {
        uuid: uuidFromDigest(chainId(diffIds)),
        // Layers map 1:1 to the source's, so even a layer that changed nothing is kept.
        keepEmpty: true,
        describe: (layer) => ({ ...layer, sourceDigest: digest, sourceDiffId: diffIds[diffIds.length - 1]! }),
        settled: true,
      },
    );
    const layer = (await step.sealed).layer;
    if (!layer) throw new ObdkitError('ECONVERT', 'converted layer is empty', { ref: digest });
    return layer;
  } finally {
    await rm(source, { force: true });
  }
}
