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
export function sha256File(path: string): Promise<{ digest: string; size: number }> {
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
      settled = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`sha256 worker for ${path} exited with code ${code}`));
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
