// sha256 of a finished file, computed by a streaming read in a worker thread so that hashing a
// multi-GiB layer blob never blocks the event loop. The worker is this same module started with a
// marker in workerData; layer-open.ts uses it to name a freshly written blob by its digest.
//
// Starting a worker costs tens of milliseconds of CPU, as much as hashing 50 MB, so the workers form
// one process-wide pool (worker-pool.ts), created on first use and kept: unreferenced while idle, so
// they never keep the process alive. Files hashed at once beyond the pool's size wait their turn.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { isMainThread, workerData } from 'node:worker_threads';
import { WarmPool, WorkerDiedError, serveRequests } from './worker-pool.js';

const MARKER = 'obdkit-sha256-file';
const CHUNK = 1 << 20;
/** Files hashed at the same time; hashing is mostly reading, so a couple of threads suffice. */
const MAX_WORKERS = Math.min(2, availableParallelism());

interface WorkerMarker {
  [MARKER]: true;
}

interface Job {
  path: string;
}

type Reply = { hex: string; size: number } | { error: string; code?: string };

function hashFileSync(path: string, buf: Buffer): { hex: string; size: number } {
  const fd = openSync(path, 'r');
  try {
    const h = createHash('sha256');
    let size = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, size);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { hex: h.digest('hex'), size };
  } finally {
    closeSync(fd);
  }
}

let pool: WarmPool<Job, Reply> | undefined;

function hashPool(): WarmPool<Job, Reply> {
  if (!pool || pool.isClosed) {
    const marker: WorkerMarker = { [MARKER]: true };
    pool = new WarmPool({ url: new URL(import.meta.url), threads: MAX_WORKERS, name: 'sha256', workerData: marker });
  }
  return pool;
}

/** `sha256:<hex>` and byte size of the file at `path`, hashed off the main thread. */
export async function sha256File(path: string): Promise<{ digest: string; size: number }> {
  // A worker that dies without answering (e.g. its module could not be loaded) is retried: the job is
  // only a path, so nothing is lost. A reply carrying an error (unreadable file) is final.
  for (let attempt = 1; ; attempt++) {
    let r: Reply;
    try {
      r = await hashPool().run({ path });
    } catch (err) {
      if (!(err instanceof WorkerDiedError) || attempt >= 3) {
        throw new Error(`sha256 of ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      continue;
    }
    if ('error' in r) throw Object.assign(new Error(`sha256 of ${path}: ${r.error}`), r.code ? { code: r.code } : {});
    return { digest: `sha256:${r.hex}`, size: r.size };
  }
}

/** Loads the hash workers now (without waiting), so the next blob does not pay for their start. */
export function warmHashWorkers(): void {
  hashPool().warm();
}

/** Thread ids of the loaded hash workers. */
export function hashWorkerThreadIds(): number[] {
  return pool?.threadIds() ?? [];
}

/** Terminates the hash workers, if any; a later sha256File starts afresh. */
export async function closeHashWorkers(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.close();
}

function isHashWorker(d: unknown): d is WorkerMarker {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

if (!isMainThread && isHashWorker(workerData)) {
  const buf = Buffer.allocUnsafe(CHUNK);
  serveRequests<Job, Reply>((job) => {
    try {
      return { reply: hashFileSync(job.path, buf) };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { reply: { error: e.message, ...(e.code ? { code: e.code } : {}) } };
    }
  });
}
