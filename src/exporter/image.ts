// An overlaybd image ready to write out: config and manifest bytes with their descriptors, and the
// layer blobs as files on disk, or, for a base layer read lazily from a registry, the repository that
// holds it (`origin`: a push mounts or copies it from there, an archive needs a local copy first).
// Each layer descriptor carries the annotations overlaybd-snapshotter keys on (blob-digest, blob-size
// as a decimal string, version 0.1.0) and the uncompressed-tar media type of the chosen flavour
// (Docker schema 2 by default, OCI with `oci`). The writers (archive-writers.ts, registry-push.ts)
// only serialise this.
import { stat } from 'node:fs/promises';
import { MediaType } from '../oci/media-types.js';
import { sha256Digest } from '../oci/digest.js';
import { overlaybdLayerDescriptor } from '../oci/overlaybd.js';
import type { Descriptor, Platform } from '../oci/types.js';
import { ObdkitError } from '../util/errors.js';
import { canonicalJsonBytes, type JsonValue } from './canonical-json.js';
import { buildImageConfig, type HistoryEntry, type RuntimeConfig } from './image-config.js';

export interface LayerBlob {
  /** The overlaybd blob (tar-wrapped LSMT/ZFile) on disk. */
  path: string;
  digest: string;
  size: number;
  fsType?: 'ext4' | 'erofs';
  /** The repository (`host[:port]/path`) holding the blob when `path` may not exist locally. */
  origin?: LayerOrigin;
}

export interface LayerOrigin {
  repository: string;
}

export interface ImageInput {
  layers: LayerBlob[];
  config: RuntimeConfig;
  history: HistoryEntry[];
  platform: Platform;
  created?: string;
  author?: string;
  /** OCI media types (`oci-mediatypes=true`); Docker schema 2 otherwise. */
  oci?: boolean;
  /** Base image config document; unknown fields are kept. */
  baseConfig?: Record<string, JsonValue>;
  /** Manifest-level annotations (OCI only). */
  annotations?: Record<string, string>;
}

export interface ExportImage {
  manifest: Buffer;
  manifestDescriptor: Descriptor;
  config: Buffer;
  configDescriptor: Descriptor;
  layers: Array<{ descriptor: Descriptor; path: string; origin?: LayerOrigin }>;
}

export function assembleImage(input: ImageInput): ExportImage {
  const oci = input.oci ?? false;
  const configDoc = buildImageConfig({
    architecture: input.platform.architecture,
    os: input.platform.os,
    ...(input.platform.variant !== undefined ? { variant: input.platform.variant } : {}),
    ...(input.created !== undefined ? { created: input.created } : {}),
    ...(input.author !== undefined ? { author: input.author } : {}),
    config: input.config,
    diffIds: input.layers.map((l) => l.digest),
    history: input.history,
    ...(input.baseConfig !== undefined ? { base: input.baseConfig } : {}),
  });
  const config = canonicalJsonBytes(configDoc);
  const configDescriptor: Descriptor = {
    mediaType: oci ? MediaType.ociConfig : MediaType.dockerConfig,
    digest: sha256Digest(config),
    size: config.length,
  };
  const layers = input.layers.map((l) => ({
    descriptor: overlaybdLayerDescriptor(l.digest, l.size, { oci, ...(l.fsType ? { fsType: l.fsType } : {}) }),
    path: l.path,
    ...(l.origin ? { origin: { repository: l.origin.repository } } : {}),
  }));
  const mediaType = oci ? MediaType.ociManifest : MediaType.dockerManifest;
  const manifestDoc: Record<string, JsonValue> = {
    schemaVersion: 2,
    mediaType,
    config: descriptorJson(configDescriptor),
    layers: layers.map((l) => descriptorJson(l.descriptor)),
  };
  if (oci && input.annotations && Object.keys(input.annotations).length) manifestDoc['annotations'] = { ...input.annotations };
  const manifest = canonicalJsonBytes(manifestDoc);
  return {
    manifest,
    manifestDescriptor: { mediaType, digest: sha256Digest(manifest), size: manifest.length, platform: input.platform },
    config,
    configDescriptor,
    layers,
  };
}

export function descriptorJson(d: Descriptor): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.urls?.length) out['urls'] = d.urls;
  if (d.annotations && Object.keys(d.annotations).length) out['annotations'] = { ...d.annotations };
  if (d.platform) out['platform'] = { ...d.platform } as Record<string, JsonValue>;
  if (d.artifactType) out['artifactType'] = d.artifactType;
  return out;
}

/**
 * Checks every layer file still has the size its descriptor claims (a cheap guard before writing).
 * Layers with an origin are not checked: they need not be here.
 */
export async function checkLayerFiles(image: ExportImage): Promise<void> {
  for (const l of image.layers) {
    if (l.origin) continue;
    const st = await stat(l.path);
    if (st.size !== l.descriptor.size) {
      throw new ObdkitError('EEXPORT', `layer blob is ${st.size} bytes, descriptor says ${l.descriptor.size}`, {
        file: l.path,
        ref: l.descriptor.digest,
      });
    }
  }
}
