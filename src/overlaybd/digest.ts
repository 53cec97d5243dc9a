// sha256 of a finished file, computed by a streaming read in a worker thread so that hashing a
// multi-GiB layer blob never blocks the event loop. The worker is this same module started with a
// marker in workerData; layer-open.ts uses it to name a freshly written blob by its digest.
//
// Starting a worker costs tens of milliseconds of CPU, as much as hashing 50 MB, so workers are kept
// for the next file: a few stay idle (unreferenced, so they never keep the process alive), one per
// file being hashed at the same time.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const MARKER = 'obdkit-sha256-file';
const CHUNK = 1 << 20;
/** Idle workers kept for reuse; more are started while more files are hashed at once. */
const MAX_IDLE = Math.min(2, availableParallelism());

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

interface HashWorker {
  worker: Worker;
  /** Settles the job in progress, if any. */
  done: ((reply: Reply | WorkerDied) => void) | null;
}

const idle: HashWorker[] = [];

function startWorker(): HashWorker {
  // Flags such as --input-type belong to a command-line entry script and make a worker fail to start.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
  const marker: WorkerMarker = { [MARKER]: true };
  const hw: HashWorker = { worker: new Worker(new URL(import.meta.url), { workerData: marker, execArgv }), done: null };
  const retire = (why: string): void => {
    const i = idle.indexOf(hw);
    if (i >= 0) idle.splice(i, 1);
    const done = hw.done;
    hw.done = null;
    done?.(new WorkerDied(why));
  };
  hw.worker.on('message', (r: Reply) => {
    const done = hw.done;
    hw.done = null;
    hw.worker.unref();
    if (idle.length < MAX_IDLE) idle.push(hw);
    else void hw.worker.terminate();
    done?.(r);
  });
  hw.worker.on('error', (err) => retire(`failed: ${err.message}`));
  hw.worker.on('exit', (code) => retire(`exited with code ${code} without answering`));
  return hw;
}

function hashInWorker(path: string): Promise<{ digest: string; size: number }> {
  return new Promise((resolve, reject) => {
    const hw = idle.pop() ?? startWorker();
    hw.worker.ref();
    hw.done = (r) => {
      if (r instanceof WorkerDied) reject(new WorkerDied(`sha256 worker for ${path} ${r.message}`));
      else if ('error' in r) reject(Object.assign(new Error(`sha256 of ${path}: ${r.error}`), { code: r.code }));
      else resolve({ digest: `sha256:${r.hex}`, size: r.size });
    };
    const job: Job = { path };
    hw.worker.postMessage(job);
  });
}

function isHashWorker(d: unknown): d is WorkerMarker {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

if (!isMainThread && isHashWorker(workerData)) {
  const buf = Buffer.allocUnsafe(CHUNK);
  parentPort!.on('message', (job: Job) => {
    let reply: Reply;
    try {
      reply = hashFileSync(job.path, buf);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      reply = { error: e.message, ...(e.code ? { code: e.code } : {}) };
    }
    parentPort!.postMessage(reply);
  });
}
