// Runs applyLayer on a worker thread, for callers on the daemon's main thread. The applier's few
// synchronous calls (utimensat, lsetxattr, mknod through koffi) and its hashing then never block
// the event loop that serves the block device and fetches remote data; a layer on disk is read
// there directly, so no stream crosses threads. Progress arrives throttled by message.
import { Worker } from 'node:worker_threads';
import { ObdkitError, type ErrorContext } from '../../src/util/errors.js';
import type { ApplyProgress, ApplyResult } from './apply-layer.js';

export interface ApplyWorkerData {
  file: string;
  rootDir: string;
  name: string;
  progressIntervalMs: number;
}

export type ApplyWorkerMessage =
  | { kind: 'progress'; progress: ApplyProgress }
  | { kind: 'done'; result: ApplyResult }
  | { kind: 'error'; code: string; message: string; context: ErrorContext; name: string };

export interface ApplyInWorkerOptions {
  onProgress?: (p: ApplyProgress) => void;
  /** Names the layer in errors (default: the file path). */
  name?: string;
  /** Minimum time between progress reports (default 250 ms). */
  progressIntervalMs?: number;
}

/** Applies the layer in `file` (tar, tar+gzip or tar+zstd) onto `rootDir` in a worker thread. */
export function applyLayerFileInWorker(file: string, rootDir: string, opts: ApplyInWorkerOptions = {}): Promise<ApplyResult> {
  const workerData: ApplyWorkerData = { file, rootDir, name: opts.name ?? file, progressIntervalMs: opts.progressIntervalMs ?? 250 };
  const worker = new Worker(new URL('./apply-worker.js', import.meta.url), { workerData });
  return new Promise<ApplyResult>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
      void worker.terminate();
    };
    worker.on('message', (m: ApplyWorkerMessage) => {
      if (m.kind === 'progress') opts.onProgress?.(m.progress);
      else if (m.kind === 'done') settle(() => resolve(m.result));
      else {
        // The message already carries the formatted location; keep the context for callers.
        const err = new ObdkitError(m.code, m.message, {});
        Object.assign(err.context, m.context);
        settle(() => reject(err));
      }
    });
    worker.on('error', (err) => settle(() => reject(err)));
    worker.on('exit', (code) => settle(() => reject(new ObdkitError('EAPPLY_WORKER', `apply worker exited with code ${code}`, { file }))));
  });
}
