// From an image reference to the lower layers of a device: resolves the reference (an index is
// narrowed to one platform), checks that the image is overlaybd (every layer carries the overlaybd
// annotations, src/oci/overlaybd.ts) and turns its layers, bottom first, into remote LowerSpecs that
// registry-fetcher.ts reads lazily. Acceleration layers are not part of the filesystem and are left out.
import { defaultPlatform, isOverlaybdLayer, isOverlaybdManifest, OverlaybdAnnotation, type Platform } from '../../src/oci/index.js';
import { formatReference, resolveImage, type ImageReference, type RegistryClient } from '../../src/registry/index.js';
import { ObdkitError } from '../../src/util/errors.js';
import type { RemoteLowerSpec } from './remote-channel.js';
import { repoBlobUrl } from './registry-fetcher.js';

export interface ImageLowers {
  ref: ImageReference;
  manifestDigest: string;
  /** Bottom first. */
  lowers: RemoteLowerSpec[];
  /** Sum of the layer blob sizes: what a full download would transfer. */
  totalBytes: number;
}

export interface ImageLowersOptions {
  platform?: Platform;
  /** Chunk cache directory recorded in each lower (registry-fetcher.ts keeps one cache per dir). */
  cacheDir: string;
}

export async function resolveImageLowers(client: RegistryClient, ref: ImageReference, opts: ImageLowersOptions): Promise<ImageLowers> {
  const img = await resolveImage(client, ref, opts.platform ?? defaultPlatform);
  const name = formatReference(ref);
  if (!isOverlaybdManifest(img.manifest)) {
    const plain = img.manifest.layers.filter((l) => !isOverlaybdLayer(l)).length;
    throw new ObdkitError(
      'ENOTOVERLAYBD',
      `${name} is not an overlaybd image (${plain} of ${img.manifest.layers.length} layers lack the overlaybd annotations); ` +
        'only overlaybd images can be mounted lazily: build the image with `obdkit build`, or convert it to overlaybd with obdkit, and mount that',
      { ref: name },
    );
  }
  const url = repoBlobUrl(client, ref);
  const lowers: RemoteLowerSpec[] = img.manifest.layers
    .filter((l) => l.annotations?.[OverlaybdAnnotation.accelerationLayer] !== 'yes')
    .map((l) => ({ kind: 'remote', digest: l.digest, size: l.size, dir: opts.cacheDir, repoBlobUrl: url }));
  return { ref, manifestDigest: img.manifestDigest, lowers, totalBytes: lowers.reduce((a, l) => a + l.size, 0) };
}
