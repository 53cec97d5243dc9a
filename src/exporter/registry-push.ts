// `type=image,push=true`: hands an assembled image (image.ts) to the registry client's pushImage,
// which uploads layer blobs (streamed from their files) and the config first, confirms every
// referenced blob is present, and PUTs the manifest last: the tag moves only when all of it is there.
import type { RegistryClient } from '../registry/client.js';
import { pushImage } from '../registry/push.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { bufferSource, fileSource } from '../registry/upload.js';
import { checkLayerFiles, type ExportImage } from './image.js';

export interface PushTarget {
  client: RegistryClient;
  /** Image names, e.g. `registry:5000/team/app:1`; every one is tagged with the same manifest. */
  names: string[];
  /** Repositories on the same registry that may already hold the layers (cross-repo mount). */
  mountFrom?: string[];
  /** Parallel blob uploads. */
  concurrency?: number;
}

export interface PushOutcome {
  name: string;
  digest: string;
}

export async function pushExportImage(image: ExportImage, target: PushTarget): Promise<PushOutcome[]> {
  await checkLayerFiles(image);
  const blobs = [
    ...(await Promise.all(
      image.layers.map(async (l) => ({ descriptor: l.descriptor, source: await fileSource(l.path) })),
    )),
    { descriptor: image.configDescriptor, source: bufferSource(image.config) },
  ];
  const out: PushOutcome[] = [];
  for (const name of target.names) {
    const ref: ImageReference = parseReference(name);
    const r = await pushImage(
      target.client,
      ref,
      { manifest: image.manifest, mediaType: image.manifestDescriptor.mediaType, blobs },
      {
        ...(target.mountFrom !== undefined ? { mountFrom: target.mountFrom } : {}),
        ...(target.concurrency !== undefined ? { concurrency: target.concurrency } : {}),
      },
    );
    out.push({ name, digest: r.digest });
  }
  return out;
}
