// What a builder pushed: the image manifest read back from the registry (an index is resolved to
// this machine's platform), with the layer blob sizes summed, all of them and those that are not
// blobs of the base image (which a builder may reuse instead of uploading again).
import type { RegistryClient } from '../../src/registry/client.js';
import { resolveImage } from '../../src/registry/pull.js';
import { parseReference } from '../../src/registry/reference.js';

export interface PushedImage {
  manifestDigest: string;
  layerMediaTypes: string[];
  layers: number;
  layerBytes: number;
  /** Layers (and their bytes) whose digest is not one of the base image's. */
  newLayers: number;
  newLayerBytes: number;
}

export async function layerDigests(client: RegistryClient, ref: string): Promise<string[]> {
  return (await resolveImage(client, parseReference(ref))).manifest.layers.map((l) => l.digest);
}

export async function inspectPushed(client: RegistryClient, ref: string, baseLayers: readonly string[]): Promise<PushedImage> {
  const img = await resolveImage(client, parseReference(ref));
  const base = new Set(baseLayers);
  const fresh = img.manifest.layers.filter((l) => !base.has(l.digest));
  return {
    manifestDigest: img.manifestDigest,
    layerMediaTypes: [...new Set(img.manifest.layers.map((l) => l.mediaType))],
    layers: img.manifest.layers.length,
    layerBytes: img.manifest.layers.reduce((s, l) => s + l.size, 0),
    newLayers: fresh.length,
    newLayerBytes: fresh.reduce((s, l) => s + l.size, 0),
  };
}
