// FROM an image: the layer chain a build step stacks on.
//  - An overlaybd image (every layer carries the overlaybd annotations) is used as is: its blobs are
//    downloaded into the content store once (verified by digest) and become the lowers.
//  - An ordinary OCI/Docker image is converted once, layer by layer, the way the official convertor
//    does: layer 0 is a fresh ext4 (mkfs on an empty device), each tar layer is applied onto the
//    mounted filesystem (whiteouts become deletions) and sealed into one overlaybd layer whose UUID
//    comes from the source chain ID. Each converted layer is cached by the chain of source layer
//    digests up to it, so images sharing a base share its conversion.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { NULL_UUID } from '../../src/overlaybd/uuid.js';
import { isOverlaybdManifest } from '../../src/oci/overlaybd.js';
import type { Platform } from '../../src/oci/types.js';
import type { RegistryClient } from '../../src/registry/client.js';
import { downloadBlob, resolveImage } from '../../src/registry/pull.js';
import { parseReference, type ImageReference } from '../../src/registry/reference.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import { ObdkitError } from '../../src/util/errors.js';
import { applyLayerFileInWorker } from '../apply/apply-in-worker.js';
import type { BlockSnapshotter } from '../device/snapshotter.js';
import { chainId, uuidFromDigest } from '../commit/chain-uuid.js';
import { sealStep } from '../commit/seal.js';

export interface ImageSourceDeps {
  store: ContentStore;
  snapshotter: BlockSnapshotter;
  registry: RegistryClient;
  /** Progress lines ("converting layer 2/5 ..."). */
  log?: (line: string) => void;
  signal?: AbortSignal;
}

/** The overlaybd layer chain for `ref` (bottom first). */
export async function imageLayers(ref: string, platform: Platform, deps: ImageSourceDeps): Promise<LayerRecord[]> {
  const imageRef = parseReference(ref);
  const img = await resolveImage(deps.registry, imageRef, platform);
  const layers = img.manifest.layers;
  if (isOverlaybdManifest(img.manifest)) {
    const out: LayerRecord[] = [];
    for (const d of layers) out.push(await fetchOverlaybdLayer(imageRef, d.digest, d.size, deps));
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

async function fetchOverlaybdLayer(ref: ImageReference, digest: string, size: number, deps: ImageSourceDeps): Promise<LayerRecord> {
  return deps.store.locks.run(`blob:${digest}`, async () => {
    const known = await deps.store.getLayer(digest);
    if (known) return known;
    if (!deps.store.hasBlob(digest)) {
      deps.log?.(`pulling overlaybd layer ${digest} (${size} bytes)`);
      const tmp = deps.store.tmpPath('pull');
      try {
        await downloadBlob(deps.registry, ref, digest, tmp, size);
        await deps.store.adoptBlob(tmp, digest, size);
      } finally {
        await rm(tmp, { force: true });
      }
    }
    const f = new FileRandomAccess(deps.store.blobPath(digest));
    let uuid: string;
    let parentUuid: string;
    try {
      const sealed = openSealedLayer(unwrapLayerBlob(f).lsmt);
      uuid = sealed.uuid;
      parentUuid = sealed.parentUuid;
    } finally {
      f.close();
    }
    const rec: LayerRecord = { digest, size, uuid, parentUuid, diffId: digest };
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
  const { store, snapshotter } = deps;
  const lowers = below.map((l) => store.blobPath(l.digest));
  const writable = await mkdtemp(join(store.workDir, 'convert-'));
  try {
    const handle = await snapshotter.prepare(writable, lowers.map((path) => ({ kind: 'file', path })), { mkfs: below.length === 0 });
    let pair;
    try {
      // The source layer is fetched (and its digest verified) into the writable dir first, then applied
      // by a worker thread: this process also serves the FUSE device under the mount, so its main thread
      // must never block in syscalls on that filesystem.
      const source = join(writable, 'source-layer');
      await downloadBlob(deps.registry, ref, digest, source, size);
      const applied = await applyLayerFileInWorker(source, handle.mountpoint, { name: digest });
      await rm(source, { force: true });
      if (applied.diffId !== diffIds[diffIds.length - 1]) {
        throw new ObdkitError('EDIFFID', `layer uncompresses to ${applied.diffId}, the image config says ${diffIds[diffIds.length - 1]}`, { ref: digest });
      }
      pair = await snapshotter.commit(handle);
    } catch (err) {
      await snapshotter.remove(handle).catch(() => undefined);
      throw err;
    }
    const uuid = uuidFromDigest(chainId(diffIds));
    const parentUuid = below.length ? below[below.length - 1]!.uuid : NULL_UUID;
    const sealInput = { upper: pair, lowers, uuid, parentUuid, store, userTag: `converted from ${digest}` };
    let { layer } = await sealStep(sealInput);
    // Layers map 1:1 to the source's, so even a layer that changed nothing is kept.
    layer ??= (await sealStep({ ...sealInput, noDedup: true })).layer;
    if (!layer) throw new ObdkitError('ECONVERT', 'converted layer is empty', { ref: digest });
    const rec: LayerRecord = { ...layer, sourceDigest: digest, sourceDiffId: diffIds[diffIds.length - 1]! };
    await store.putLayer(rec);
    return rec;
  } finally {
    await rm(writable, { recursive: true, force: true });
  }
}
