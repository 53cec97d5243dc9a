// Uploading layer blobs while the build still runs. A layer is final the moment it is sealed, so an
// image output that pushes starts sending it to every target repository right away (a few at a time,
// each checked with a HEAD first), and the push at the end (registry-push.ts) only waits for what is
// still in flight before the config and the manifest. Nothing here writes a manifest or a tag: a
// build that fails or is cancelled leaves at most some unreferenced blobs in the registry, and a
// layer that does not end up in the image (another stage's) was uploaded for nothing, harmlessly.
// A failed upload is kept and reported when the push asks for that blob, naming blob and registry.
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import type { RegistryClient } from '../registry/client.js';
import { parseReference, type ImageReference } from '../registry/reference.js';
import { fileSource, uploadBlob, type UploadStats } from '../registry/upload.js';

/** A sealed layer blob in the content store. */
export interface SealedBlob {
  digest: string;
  size: number;
  path: string;
}

export interface EarlyPushOptions {
  /** Uploads at once, over all repositories (default 2: the build itself needs the CPU and the disk). */
  concurrency?: number;
  /** Told after each finished upload (for progress lines). */
  onUploaded?: (repository: string, digest: string, stats: UploadStats) => void;
  /** close() also closes the client (when it was made for these uploads and the push after them). */
  closeClient?: boolean;
}

interface Queued {
  run: () => void;
  cancel: (err: Error) => void;
}

function repositoryOf(ref: ImageReference): string {
  return `${ref.host}/${ref.repository}`;
}

export class EarlyLayerPush {
  private readonly targets: ImageReference[];
  private readonly jobs = new Map<string, Promise<UploadStats>>();
  private readonly queue: Queued[] = [];
  private readonly abort = new AbortController();
  private readonly limit: number;
  private running = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  /** `names`: the image names the output pushes to; each distinct repository gets every layer. */
  constructor(readonly client: RegistryClient, names: readonly string[], private readonly opts: EarlyPushOptions = {}) {
    const byRepo = new Map<string, ImageReference>();
    for (const n of names) {
      const ref = parseReference(n);
      byRepo.set(repositoryOf(ref), ref);
    }
    this.targets = [...byRepo.values()];
    this.limit = Math.max(1, opts.concurrency ?? 2);
  }

  /** Starts uploading a sealed layer to every target repository; returns at once. */
  add(blob: SealedBlob): void {
    if (this.closed) return;
    for (const ref of this.targets) {
      const key = `${repositoryOf(ref)}@${blob.digest}`;
      if (this.jobs.has(key)) continue;
      const job = this.schedule(() => this.upload(ref, blob));
      // Failures are reported to whoever waits for the blob; an unwanted layer's failure to no one.
      job.catch(() => undefined);
      this.jobs.set(key, job);
    }
  }

  /**
   * The early upload of `digest` to the repository of `ref`, or undefined when none was started.
   * Rejects with the upload's error (an ObdkitError naming blob and registry).
   */
  wait(ref: ImageReference, digest: string): Promise<UploadStats> | undefined {
    return this.jobs.get(`${repositoryOf(ref)}@${digest}`);
  }

  /** Blobs whose upload was started, per repository (`host/path`), for reports and tests. */
  started(): string[] {
    return [...this.jobs.keys()];
  }

  /**
   * Stops: queued uploads are dropped, running ones abandoned (their upload sessions are left to the
   * registry's purge). Resolves when nothing is in flight any more; never rejects.
   */
  close(): Promise<void> {
    this.closing ??= this.stop();
    return this.closing;
  }

  private async stop(): Promise<void> {
    this.closed = true;
    const cancelled = new ObdkitError('ECANCELED', 'early layer upload stopped before it began');
    for (const q of this.queue.splice(0)) q.cancel(cancelled);
    if (this.running > 0) this.abort.abort(new ObdkitError('ECANCELED', 'early layer upload stopped'));
    await Promise.allSettled([...this.jobs.values()]);
    if (this.opts.closeClient) await this.client.close().catch(() => undefined);
  }

  private schedule(fn: () => Promise<UploadStats>): Promise<UploadStats> {
    return new Promise<UploadStats>((resolve, reject) => {
      const run = (): void => {
        this.running++;
        fn()
          .then(resolve, reject)
          .finally(() => {
            this.running--;
            this.queue.shift()?.run();
          });
      };
      if (this.running < this.limit) run();
      else this.queue.push({ run, cancel: reject });
    });
  }

  private async upload(ref: ImageReference, blob: SealedBlob): Promise<UploadStats> {
    const repository = repositoryOf(ref);
    try {
      const stats = await uploadBlob(this.client, ref, { digest: blob.digest, size: blob.size }, await fileSource(blob.path), { signal: this.abort.signal });
      log.debug({ repository, blob: blob.digest, outcome: stats.outcome }, 'layer uploaded while building');
      this.opts.onUploaded?.(repository, blob.digest, stats);
      return stats;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new ObdkitError('EREG_UPLOAD', `uploading layer ${blob.digest} to ${repository} during the build failed: ${why}`, { ref: repository, blob: blob.digest }, { cause: err });
    }
  }
}
