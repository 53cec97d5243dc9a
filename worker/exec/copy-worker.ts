// Runs copyFiles (synchronous, file-by-file) on a worker thread so the daemon's event loop, which
// also serves the block device, never blocks on a large COPY. The same module is the worker's entry.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ObdkitError } from '../../src/util/errors.js';
import { copyFiles, type CopyOptions } from './copy-files.js';

interface Reply {
  ok: boolean;
  code?: string;
  message?: string;
}

/** copyFiles on a worker thread; errors come back as ObdkitError with the original code. */
export function copyFilesInWorker(opts: CopyOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: { obdkitCopy: opts } });
    let replied = false;
    w.once('message', (r: Reply) => {
      replied = true;
      if (r.ok) resolve();
      else reject(new ObdkitError(r.code ?? 'ECOPY', r.message ?? 'copy failed', { dest: opts.dest }));
    });
    w.once('error', (e) => {
      replied = true;
      reject(new ObdkitError('ECOPY', `copy worker failed: ${e.message}`, { dest: opts.dest }, { cause: e }));
    });
    w.once('exit', (code) => {
      if (!replied) reject(new ObdkitError('ECOPY', `copy worker exited with code ${code}`, { dest: opts.dest }));
    });
  });
}

const job = isMainThread ? undefined : (workerData as { obdkitCopy?: CopyOptions } | null)?.obdkitCopy;
if (job !== undefined && parentPort !== null) {
  const port = parentPort;
  try {
    copyFiles(job);
    port.postMessage({ ok: true } satisfies Reply);
  } catch (err) {
    const e = err as { code?: unknown; message?: string };
    port.postMessage({ ok: false, code: typeof e.code === 'string' ? e.code : 'ECOPY', message: e.message ?? String(err) } satisfies Reply);
  }
}
