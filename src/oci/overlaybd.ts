// The overlaybd annotations on layer descriptors (what containerd's overlaybd snapshotter reads to
// decide a layer is a lazily-read block blob) and helpers to write and recognise them. An overlaybd
// layer is published as an uncompressed tar (the blob is a one-file tar around a ZFile/LSMT).
import type { Descriptor, ImageManifest } from './types.js';
import { MediaType } from './media-types.js';

export const OverlaybdAnnotation = {
  blobDigest: 'containerd.io/snapshot/overlaybd/blob-digest',
  /** Blob size as a decimal string. */
  blobSize: 'containerd.io/snapshot/overlaybd/blob-size',
  version: 'containerd.io/snapshot/overlaybd/version',
  fsType: 'containerd.io/snapshot/overlaybd/blob-fs-type',
  accelerationLayer: 'containerd.io/snapshot/overlaybd/acceleration-layer',
} as const;

export const OVERLAYBD_VERSION = '0.1.0';

/** Layer media types an overlaybd blob is published under. */
export const overlaybdLayerMediaTypes: readonly string[] = [MediaType.ociLayerTar, MediaType.dockerLayerTar];

/** A layer descriptor for an overlaybd blob, with the three annotations the snapshotter needs. */
export function overlaybdLayerDescriptor(
  digest: string,
  size: number,
  opts: { oci?: boolean; fsType?: 'ext4' | 'erofs' } = {},
): Descriptor {
  const annotations: Record<string, string> = {
    [OverlaybdAnnotation.blobDigest]: digest,
    [OverlaybdAnnotation.blobSize]: String(size),
    [OverlaybdAnnotation.version]: OVERLAYBD_VERSION,
  };
  if (opts.fsType) annotations[OverlaybdAnnotation.fsType] = opts.fsType;
  return { mediaType: opts.oci === false ? MediaType.dockerLayerTar : MediaType.ociLayerTar, digest, size, annotations };
}

/**
 * True if the layer carries the annotations the snapshotter keys on (blob-digest and blob-size,
 * consistent with the descriptor). The version annotation is not required, as upstream does not check it.
 */
export function isOverlaybdLayer(d: Descriptor): boolean {
  const a = d.annotations;
  if (!a) return false;
  const digest = a[OverlaybdAnnotation.blobDigest];
  const size = a[OverlaybdAnnotation.blobSize];
  return digest === d.digest && size !== undefined && /^\d+$/.test(size) && Number(size) === d.size;
}

/** True if every non-acceleration layer is an overlaybd layer (and there is at least one). */
export function isOverlaybdManifest(m: ImageManifest): boolean {
  const layers = m.layers.filter((l) => l.annotations?.[OverlaybdAnnotation.accelerationLayer] !== 'yes');
  return layers.length > 0 && layers.every(isOverlaybdLayer);
}
