// `type=image,push=true`: hands an assembled image (image.ts) to the registry client's pushImage,
// which uploads layer blobs (streamed from their files) and the config first, confirms every
// referenced blob is present, and PUTs the manifest last: the tag moves only when all of it is there.
// Two kinds of layer need no upload here:
//  - layers an EarlyLayerPush (early-push.ts) already sent while the build ran: the push waits for
//    them, and a failure of theirs fails the push, naming the blob and the registry;
//  - layers with an origin (a lazily read base): mounted from their repository on the same registry
//    host, else uploaded from the local file when there is one, else streamed from the origin.
import { existsSync } from 'node:fs';
import type { RegistryClient } from '../registry/client.js';
import { transferBlob } from '../registry/blob-transfer.js';
import { mapLimit } from '../registry/limit.js';
import { pushImage, type PushBlob } from '../registry/push.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { bufferSource, fileSource, type UploadOutcome } from '../registry/upload.js';
import type { EarlyLayerPush } from './early-push.js';
import { checkLayerFiles, type ExportImage } from './image.js';

export interface PushTarget {
  client: RegistryClient;
  /** Image names, e.g. `registry:5000/team/app:1`; every one is tagged with the same manifest. */
  names: string[];
  /** Repositories on the same registry that may already hold the layers (cross-repo mount). */
  mountFrom?: string[];
  /** Parallel blob uploads. */
  concurrency?: number;
  /** Layers uploaded while the build ran (same client). */
  early?: EarlyLayerPush;
}

export interface PushOutcome {
  name: string;
  digest: string;
  /** How each blob got there (`exists`, `mounted`, `uploaded`), layers and config. */
  blobs: Map<string, UploadOutcome>;
}

type ImageLayer = ExportImage['layers'][number];

export async function pushExportImage(image: ExportImage, target: PushTarget): Promise<PushOutcome[]> {
  await checkLayerFiles(image);
  const out: PushOutcome[] = [];
  for (const name of target.names) {
    const ref: ImageReference = parseReference(name);
    const outcomes = new Map<string, UploadOutcome>();
    const pending: ImageLayer[] = [];
    for (const l of image.layers) {
      const early = target.early?.wait(ref, l.descriptor.digest);
      if (early) outcomes.set(l.descriptor.digest, (await early).outcome);
      else pending.push(l);
    }
    const fromOrigin = pending.filter((l) => l.origin && (parseReference(l.origin.repository).host === ref.host || !existsSync(l.path)));
    await mapLimit(fromOrigin, target.concurrency ?? 3, async (l) => {
      const origin = parseReference(l.origin!.repository);
      outcomes.set(l.descriptor.digest, await transferBlob(target.client, origin, ref, l.descriptor));
    });
    const blobs: PushBlob[] = [];
    for (const l of pending) {
      if (fromOrigin.includes(l)) continue;
      blobs.push({ descriptor: l.descriptor, source: await fileSource(l.path) });
    }
    blobs.push({ descriptor: image.configDescriptor, source: bufferSource(image.config) });
    const r = await pushImage(
      target.client,
      ref,
      { manifest: image.manifest, mediaType: image.manifestDescriptor.mediaType, blobs },
      {
        ...(target.mountFrom !== undefined ? { mountFrom: target.mountFrom } : {}),
        ...(target.concurrency !== undefined ? { concurrency: target.concurrency } : {}),
      },
    );
    for (const [digest, s] of r.uploads) outcomes.set(digest, s.outcome);
    out.push({ name, digest: r.digest, blobs: outcomes });
  }
  return out;
}
