// Pushing an image: blobs first (in parallel, bounded), then a HEAD of every blob and child
// manifest the manifest references, and only then the manifest PUT — the one request that creates
// or moves the tag. A push that fails anywhere before that leaves the tag untouched.
import { ObdkitError } from '../util/errors.js';
import { sha256Digest } from '../oci/digest.js';
import { parseManifestBytes, type Descriptor } from '../oci/types.js';
import { header, type RegistryClient } from './client.js';
import { mapLimit } from './limit.js';
import { headManifest } from './pull.js';
import { formatReference, manifestKey, withDigest, type ImageReference } from './reference.js';
import { confirmBlob, uploadBlob, type BlobSource, type UploadOptions, type UploadStats } from './upload.js';

export interface PushBlob {
  descriptor: Pick<Descriptor, 'digest' | 'size'>;
  source: BlobSource;
}

export interface PushImageInput {
  /** Exact manifest (or index) bytes: the digest is computed over them. */
  manifest: Buffer;
  mediaType: string;
  /** Blobs to upload; blobs the registry already has may be left out (they are still checked). */
  blobs: readonly PushBlob[];
}

export interface PushOptions extends UploadOptions {
  /** Parallel blob uploads (default 3). */
  concurrency?: number;
}

export interface PushResult {
  digest: string;
  uploads: Map<string, UploadStats>;
}

/** References a manifest makes: blobs (config, layers) and, for an index, child manifests. */
export function referencedContent(bytes: Buffer, mediaType: string, source: string): { blobs: Descriptor[]; manifests: Descriptor[] } {
  const parsed = parseManifestBytes(bytes, source, mediaType);
  if (parsed.kind === 'index') return { blobs: [], manifests: parsed.index.manifests };
  return { blobs: [parsed.manifest.config, ...parsed.manifest.layers], manifests: [] };
}

/** Checks that everything a manifest references is present, then PUTs it. Returns its digest. */
export async function putManifestWhenComplete(client: RegistryClient, ref: ImageReference, manifest: Buffer, mediaType: string): Promise<string> {
  const refText = formatReference(ref);
  const { blobs, manifests } = referencedContent(manifest, mediaType, refText);
  await mapLimit(blobs, 8, (d) => confirmBlob(client, ref, d));
  await mapLimit(manifests, 8, async (d) => {
    const have = await headManifest(client, withDigest(ref, d.digest));
    if (!have) {
      throw new ObdkitError('EREG_BLOB_MISSING', `child manifest ${d.digest} is not in ${ref.host}/${ref.repository}; not pushing the index`, { ref: refText });
    }
  });
  const digest = sha256Digest(manifest);
  if (ref.digest && ref.digest !== digest) {
    throw new ObdkitError('EDIGEST_MISMATCH', `manifest bytes have digest ${digest}, the reference pins ${ref.digest}`, { ref: refText });
  }
  const res = await client.send({
    ref,
    method: 'PUT',
    target: `/v2/${ref.repository}/manifests/${manifestKey(ref)}`,
    headers: { 'content-type': mediaType, 'content-length': String(manifest.length) },
    body: () => manifest,
    actions: ['pull', 'push'],
    op: 'push manifest',
  });
  await res.body.dump();
  const said = header(res.headers, 'docker-content-digest');
  if (said && said !== digest) {
    throw new ObdkitError('EDIGEST_MISMATCH', `registry stored the manifest as ${said}, expected ${digest}`, { ref: refText });
  }
  return digest;
}

/** Uploads blobs, confirms every referenced blob is present, then PUTs the manifest (tagging it). */
export async function pushImage(client: RegistryClient, ref: ImageReference, input: PushImageInput, opts: PushOptions = {}): Promise<PushResult> {
  const uploads = new Map<string, UploadStats>();
  const unique = [...new Map(input.blobs.map((b) => [b.descriptor.digest, b])).values()];
  await mapLimit(unique, opts.concurrency ?? 3, async (b) => {
    uploads.set(b.descriptor.digest, await uploadBlob(client, ref, b.descriptor, b.source, opts));
  });
  const digest = await putManifestWhenComplete(client, ref, input.manifest, input.mediaType);
  return { digest, uploads };
}
