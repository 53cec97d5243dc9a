// Moving one blob that already lives in some repository (its origin) into a target repository, with
// no local copy: nothing to do when the target has it (HEAD); on the same registry host a
// cross-repository mount (upload.ts's mountBlob); otherwise, or when the registry declines the mount,
// the bytes are streamed from an origin GET into an upload of the target (upload.ts's uploadBlob).
// A read of the whole blob is checked against its digest and size as it streams (pull.ts's
// VerifyingStream); a resumed upload reads the rest with a ranged GET, and the registry checks the
// digest of what it assembled when the upload is finished.
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ObdkitError } from '../util/errors.js';
import type { RegistryClient } from './client.js';
import { VerifyingStream, headBlob } from './pull.js';
import type { ImageReference } from './reference.js';
import { mountBlob, uploadBlob, type BlobSource, type UploadOptions, type UploadOutcome } from './upload.js';

/** Counts the bytes of a ranged read: fewer or more than asked is an error, not an end. */
class ExactLength extends Transform {
  private seen = 0;
  constructor(private readonly length: number, private readonly what: string) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.length) cb(new ObdkitError('EREG_RANGE', `ranged read returned more than ${this.length} bytes`, { ref: this.what }));
    else cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.seen !== this.length) cb(new ObdkitError('EREG_RANGE', `ranged read returned ${this.seen} bytes, expected ${this.length}`, { ref: this.what, offset: this.seen }));
    else cb();
  }
}

/** The bytes of a blob in `origin`, as an upload source: each open is one GET (ranged unless whole). */
export function remoteBlobSource(client: RegistryClient, origin: ImageReference, desc: { digest: string; size: number }): BlobSource {
  const what = `${origin.host}/${origin.repository}@${desc.digest}`;
  return {
    size: desc.size,
    open(start: number, end: number): Readable {
      const out = new PassThrough({ highWaterMark: 1 << 20 });
      if (end <= start) {
        out.end();
        return out;
      }
      const whole = start === 0 && end === desc.size;
      void (async () => {
        const res = await client.send({
          ref: origin,
          method: 'GET',
          target: `/v2/${origin.repository}/blobs/${desc.digest}`,
          headers: whole ? {} : { range: `bytes=${start}-${end - 1}` },
          actions: ['pull'],
          op: `read blob ${desc.digest} for a copy`,
        });
        if (!whole && res.status !== 206) {
          await res.body.dump();
          throw new ObdkitError('EREG_RANGE', `asked for bytes ${start}-${end - 1}, the registry answered ${res.status}`, { ref: what });
        }
        const check = whole ? new VerifyingStream(desc.digest, desc.size, what) : new ExactLength(end - start, what);
        await pipeline(res.body, check, out);
      })().catch((err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))));
      return out;
    },
  };
}

/**
 * Makes blob `desc` of repository `origin` present in `target`: 'exists' (already there), 'mounted'
 * (same registry host, no bytes moved) or 'uploaded' (streamed from the origin).
 */
export async function transferBlob(
  client: RegistryClient,
  origin: ImageReference,
  target: ImageReference,
  desc: { digest: string; size: number },
  opts: UploadOptions = {},
): Promise<UploadOutcome> {
  if ((await headBlob(client, target, desc.digest)) !== undefined) return 'exists';
  if (origin.host === target.host && (await mountBlob(client, target, desc, origin.repository))) return 'mounted';
  const stats = await uploadBlob(client, target, desc, remoteBlobSource(client, origin, desc), opts);
  return stats.outcome;
}
