// sha256 of a finished file, computed by a streaming read in a worker thread so that hashing a
// multi-GiB layer blob never blocks the event loop. The worker is this same module started with a
// marker in workerData; layer-open.ts uses it to name a freshly written blob by its digest.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const MARKER = 'obdkit-sha256-file';
const CHUNK = 1 << 20;

interface Job {
  [MARKER]: true;
  path: string;
}

type Reply = { hex: string; size: number } | { error: string; code?: string };

function hashFileSync(path: string): { hex: string; size: number } {
  const fd = openSync(path, 'r');
  try {
    const h = createHash('sha256');
    const buf = Buffer.allocUnsafe(CHUNK);
    let size = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, CHUNK, size);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { hex: h.digest('hex'), size };
  } finally {
    closeSync(fd);
  }
}

/** `sha256:<hex>` and byte size of the file at `path`, hashed off the main thread. */
export async function sha256File(path: string): Promise<{ digest: string; size: number }> {
  // A worker that dies without answering (e.g. its module could not be loaded) is retried: the job is
  // only a path, so nothing is lost. A reply carrying an error (unreadable file) is final.
  for (let attempt = 1; ; attempt++) {
    try {
      return await hashInWorker(path);
    } catch (err) {
      if (!(err instanceof WorkerDied) || attempt >= 3) throw err;
    }
  }
}

class WorkerDied extends Error {}

function hashInWorker(path: string): Promise<{ digest: string; size: number }> {
  return new Promise((resolve, reject) => {
    const job: Job = { [MARKER]: true, path };
    // Flags such as --input-type belong to a command-line entry script and make a worker fail to start.
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const worker = new Worker(new URL(import.meta.url), { workerData: job, execArgv });
    let settled = false;
    worker.once('message', (r: Reply) => {
      settled = true;
      if ('error' in r) reject(Object.assign(new Error(`sha256 of ${path}: ${r.error}`), { code: r.code }));
      else resolve({ digest: `sha256:${r.hex}`, size: r.size });
    });
    worker.once('error', (err) => {
      if (settled) return;
      settled = true;
      reject(new WorkerDied(`sha256 worker for ${path} failed: ${err.message}`));
    });
    worker.once('exit', (code) => {
      if (settled) return;
      settled = true;
      reject(new WorkerDied(`sha256 worker for ${path} exited with code ${code} without answering`));
    });
  });
}

function isJob(d: unknown): d is Job {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

if (!isMainThread && isJob(workerData)) {
  let reply: Reply;
  try {
    reply = hashFileSync(workerData.path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = { error: e.message, ...(e.code ? { code: e.code } : {}) };
  }
  parentPort!.postMessage(reply);
}
