// Copying an image (manifest or whole index) from one reference to another. Within one registry
// blobs are mounted across repositories (no bytes move); between registries each blob is streamed
// into a verified temp file and uploaded from there, so a failed upload can resume without pulling
// again. Child manifests of an index are pushed by digest before the index, and the destination tag
// is written last.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { digestFileName } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { RegistryClient } from './client.js';
import { mapLimit } from './limit.js';
import { downloadBlob, getManifest, headBlob } from './pull.js';
import { putManifestWhenComplete, referencedContent } from './push.js';
import { formatReference, withDigest, type ImageReference } from './reference.js';
import { fileSource, mountBlob, uploadBlob, type UploadOutcome } from './upload.js';

export interface CopyOptions {
  concurrency?: number;
  /** Directory for temp files of cross-registry copies (default: the OS temp dir). */
  tmpDir?: string;
  onBlob?: (digest: string, outcome: UploadOutcome) => void;
}

export interface CopyResult {
  digest: string;
  mediaType: string;
  blobs: Map<string, UploadOutcome>;
}

export async function copyImage(client: RegistryClient, src: ImageReference, dst: ImageReference, opts: CopyOptions = {}): Promise<CopyResult> {
  const blobs = new Map<string, UploadOutcome>();
  const sameRegistry = src.host === dst.host;
  const work = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'obdkit-copy-'));
  try {
    const copyBlob = async (d: Descriptor): Promise<void> => {
      if (blobs.has(d.digest)) return;
      let outcome: UploadOutcome;
      if ((await headBlob(client, dst, d.digest)) === d.size) outcome = 'exists';
      else if (sameRegistry && (await mountBlob(client, dst, d, src.repository))) outcome = 'mounted';
      else outcome = (await copyViaFile(d)).outcome;
      blobs.set(d.digest, outcome);
      opts.onBlob?.(d.digest, outcome);
    };
    const copyViaFile = async (d: Descriptor) => {
      const path = join(work, digestFileName(d.digest));
      try {
        await downloadBlob(client, src, d.digest, path, d.size);
        return await uploadBlob(client, dst, d, await fileSource(path));
      } finally {
        await rm(path, { force: true });
      }
    };
    const copyManifest = async (digestOrTag: ImageReference, isRoot: boolean): Promise<{ digest: string; mediaType: string }> => {
      const m = await getManifest(client, digestOrTag);
      const { blobs: refs, manifests } = referencedContent(m.bytes, m.mediaType, formatReference(digestOrTag));
      for (const child of manifests) await copyManifest(withDigest(src, child.digest), false);
      await mapLimit(refs, opts.concurrency ?? 3, copyBlob);
      const target = isRoot ? dst : withDigest(dst, m.digest);
      const digest = await putManifestWhenComplete(client, target, m.bytes, m.mediaType);
      return { digest, mediaType: m.mediaType };
    };
    const root = await copyManifest(src, true);
    return { ...root, blobs };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
