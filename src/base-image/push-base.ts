// Publishes a base layer as an ordinary one-layer OCI image (linux, config with PATH and
// `Cmd ["bash"]`), so `FROM <ref>` works with any builder and obdkit can convert it like any other
// image. The config and manifest are canonical JSON with a fixed `created` time, so the same layer
// always gives the same image digest. Uploading goes through src/registry (blobs, then manifest).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Transform, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { canonicalJsonBytes, type JsonValue } from '../exporter/canonical-json.js';
import { sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { RegistryClient } from '../registry/client.js';
import { pushImage } from '../registry/push.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { bufferSource, fileSource } from '../registry/upload.js';
import type { DebianBase } from './debian-base.js';
import { DEFAULT_SOURCE_DATE_EPOCH } from './debian-base.js';
import { debianArch } from './debootstrap.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A gzip layer file, with whatever is already known about it. */
export interface BaseLayerInput {
  tarPath: string;
  diffId?: string;
  digest?: string;
  size?: number;
  arch?: string;
  suite?: string;
  variant?: string;
  sourceDateEpoch?: number;
}

export interface PushBaseOptions {
  client?: RegistryClient;
}

export interface PushedBaseImage {
  /** Manifest digest. */
  digest: string;
  manifest: Buffer;
  config: Buffer;
  configDigest: string;
  layerDigest: string;
}

/** sha256 of a file and of its gunzipped content, in one read. */
async function digestsOf(path: string): Promise<{ digest: string; diffId: string; size: number }> {
  const outer = createHash('sha256');
  const inner = createHash('sha256');
  let size = 0;
  await pipeline(
    createReadStream(path, { highWaterMark: 1 << 20 }),
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        outer.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    }),
    createGunzip(),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        inner.update(chunk);
        cb();
      },
    }),
  );
  return { digest: `sha256:${outer.digest('hex')}`, diffId: `sha256:${inner.digest('hex')}`, size };
}

/** The image config and manifest for a one-layer base image (pure: no I/O). */
export function baseImageDocuments(layer: { digest: string; size: number; diffId: string }, info: BaseLayerInput = { tarPath: '' }) {
  const created = new Date((info.sourceDateEpoch ?? DEFAULT_SOURCE_DATE_EPOCH) * 1000).toISOString();
  const createdBy = info.suite ? `debootstrap --variant=${info.variant ?? 'minbase'} ${info.suite}` : 'obdkit base layer';
  const configDoc: JsonValue = {
    architecture: info.arch ?? debianArch(),
    os: 'linux',
    created,
    config: { Env: [`PATH=${DEFAULT_PATH}`], Cmd: ['bash'] },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created, created_by: createdBy }],
  };
  const config = canonicalJsonBytes(configDoc);
  const configDigest = sha256Digest(config);
  const manifest = canonicalJsonBytes({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
    layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
  });
  return { config, configDigest, manifest };
}

/** Pushes the layer as a one-layer image to `ref` and returns the manifest digest. */
export async function pushBaseImage(
  tarGz: string | BaseLayerInput | DebianBase,
  ref: string | ImageReference,
  opts: PushBaseOptions = {},
): Promise<PushedBaseImage> {
  const info: BaseLayerInput = typeof tarGz === 'string' ? { tarPath: tarGz } : tarGz;
  let { digest, diffId, size } = info;
  if (digest === undefined || diffId === undefined || size === undefined) {
    ({ digest, diffId, size } = await digestsOf(info.tarPath));
  } else if ((await stat(info.tarPath)).size !== size) {
    ({ digest, diffId, size } = await digestsOf(info.tarPath));
  }
  const target = typeof ref === 'string' ? parseReference(ref) : ref;
  const client = opts.client ?? new RegistryClient();
  const docs = baseImageDocuments({ digest, size, diffId }, info);
  let pushed;
  try {
    pushed = await pushImage(client, target, {
      manifest: docs.manifest,
      mediaType: MediaType.ociManifest,
      blobs: [
        { descriptor: { digest: docs.configDigest, size: docs.config.length }, source: bufferSource(docs.config) },
        { descriptor: { digest, size }, source: await fileSource(info.tarPath) },
      ],
    });
  } finally {
    if (opts.client === undefined) await client.close();
  }
  return { digest: pushed.digest, manifest: docs.manifest, config: docs.config, configDigest: docs.configDigest, layerDigest: digest };
}
