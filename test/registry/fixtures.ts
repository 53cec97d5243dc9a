// Shared test fixtures for registry tests: random blobs (in memory or streamed to a file with their
// digest computed on the way), and a minimal OCI image (config + layers) ready for pushImage.
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { MediaType } from '../../src/oci/media-types.js';
import { overlaybdLayerDescriptor } from '../../src/oci/overlaybd.js';
import { sha256Digest } from '../../src/oci/digest.js';
import type { Descriptor, ImageManifest } from '../../src/oci/types.js';

export function randomBlob(size: number): { data: Buffer; digest: string } {
  const data = randomBytes(size);
  return { data, digest: sha256Digest(data) };
}

/** Writes `size` random bytes to `path` in 8 MiB pieces; returns the sha256 digest. */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const hash = createHash('sha256');
  const piece = Buffer.allocUnsafe(8 << 20);
  try {
    let done = 0;
    while (done < size) {
      const n = Math.min(piece.length, size - done);
      randomFillSync(piece, 0, n);
      hash.update(piece.subarray(0, n));
      await fh.write(piece, 0, n, done);
      done += n;
    }
  } finally {
    await fh.close();
  }
  return `sha256:${hash.digest('hex')}`;
}

export interface TestImage {
  manifest: Buffer;
  mediaType: string;
  config: { data: Buffer; descriptor: Descriptor };
  layers: { data: Buffer; descriptor: Descriptor }[];
}

/** A small OCI image whose layers are marked as overlaybd blobs. */
export function makeImage(layerSizes: number[], label = 'test'): TestImage {
  const layers = layerSizes.map((n) => {
    const b = randomBlob(n);
    return { data: b.data, descriptor: overlaybdLayerDescriptor(b.digest, n) };
  });
  const configData = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { label } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.descriptor.digest) },
    }),
  );
  const config = { data: configData, descriptor: { mediaType: MediaType.ociConfig, digest: sha256Digest(configData), size: configData.length } };
  const m: ImageManifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: config.descriptor, layers: layers.map((l) => l.descriptor) };
  return { manifest: Buffer.from(JSON.stringify(m)), mediaType: MediaType.ociManifest, config, layers };
}
