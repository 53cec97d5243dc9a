// A pool of long-lived worker threads that each run one request at a time, used by compress-pool.ts
// (ZFile block compression), digest.ts (sha256 of finished blobs) and the seal's comparison with the
// lower layers (worker/commit/dedup-worker.ts). Starting a worker costs tens
// of milliseconds of CPU, so workers are started on first need (or ahead of it with `warm()`) and
// kept for every later call in the process. A worker is referenced only while it holds work, or
// while it is starting and work waits for it, so an idle pool never keeps the process alive.
// Requests queue in arrival order; each reply goes back to the request its worker was running.
//
// Protocol with the worker side (`serveRequests` below): the worker posts `{ ready: true }` once its
// module has loaded, then exactly one reply per request.
import { Worker, parentPort, type Transferable } from 'node:worker_threads';

/** Sent once when the worker's module has loaded: only then does the pool hand over any data. */
export interface WorkerReady {
  ready: true;
}

/** Consecutive workers that may die before loading before queued work is failed. */
const MAX_START_FAILURES = 3;

/** A worker ended (crashed or exited) before answering; `beforeReady` if its module never loaded. */
export class WorkerDiedError extends Error {
  constructor(message: string, readonly beforeReady: boolean) {
    super(message);
    this.name = 'WorkerDiedError';
  }
}

export interface WarmPoolOptions {
  /** Module the workers run. */
  url: URL;
  threads: number;
  /** Used in error messages: "<name> worker died …". */
  name: string;
  workerData?: unknown;
}

interface Task<Req, Rep> {
  req: Req;
  transfer: readonly Transferable[];
  resolve: (r: Rep) => void;
  reject: (e: Error) => void;
}

interface Slot<Req, Rep> {
  worker: Worker;
  task: Task<Req, Rep> | null;
  ready: boolean;
  referenced: boolean;
}

/** Parent's node flags minus those that only make sense for an entry script given on the command line. */
export function workerExecArgv(): string[] {
  return process.execArgv.filter((a) => !a.startsWith('--input-type'));
}

export class WarmPool<Req, Rep> {
  readonly threads: number;
  private readonly slots: Slot<Req, Rep>[] = [];
  private readonly queue: Task<Req, Rep>[] = [];
  private closed = false;
  private startFailures = 0;
  private spawnedCount = 0;

  constructor(private readonly opts: WarmPoolOptions) {
    this.threads = Math.max(1, Math.floor(opts.threads));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Runs one request on the next free worker. `transfer` is moved to the worker with it. */
  run(req: Req, transfer: readonly Transferable[] = []): Promise<Rep> {
    if (this.closed) return Promise.reject(new Error(`${this.opts.name} pool is closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ req, transfer, resolve, reject });
      this.pump();
    });
  }

  /** Starts every worker now, without waiting, so that the first requests find them loaded. */
  warm(): void {
    if (this.closed) return;
    while (this.slots.length < this.threads) this.spawn();
    this.updateRefs();
  }

  /** Workers this pool has started so far, restarts included (for diagnostics and tests). */
  get spawned(): number {
    return this.spawnedCount;
  }

  /** Thread ids of the workers currently in the pool (for diagnostics and tests). */
  threadIds(): number[] {
    return this.slots.map((s) => s.worker.threadId);
  }

  /** Fails queued requests and terminates the workers; later `run` calls are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    const err = new Error(`${this.opts.name} pool closed`);
    for (const t of this.queue.splice(0)) t.reject(err);
    const slots = this.slots.splice(0);
    for (const s of slots) {
      s.task?.reject(err);
      s.task = null;
    }
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const slot = this.slots.find((s) => s.ready && s.task === null);
      if (!slot) {
        // Start workers up to the limit; queued tasks go out as they report ready.
        const starting = this.slots.filter((s) => !s.ready).length;
        if (this.slots.length < this.threads && starting < this.queue.length) {
          this.spawn();
          continue;
        }
        break;
      }
      const task = this.queue.shift()!;
      slot.task = task;
      slot.worker.postMessage(task.req, task.transfer);
    }
    this.updateRefs();
  }

  /** Busy workers are referenced; starting ones only while work waits; idle ones never. */
  private updateRefs(): void {
    const waiting = this.queue.length > 0;
    for (const s of this.slots) {
      const want = s.task !== null || (!s.ready && waiting);
      if (want === s.referenced) continue;
      s.referenced = want;
      if (want) s.worker.ref();
      else s.worker.unref();
    }
  }

  private spawn(): void {
    const worker = new Worker(this.opts.url, { execArgv: workerExecArgv(), workerData: this.opts.workerData });
    this.spawnedCount++;
    // A new Worker is referenced; updateRefs() settles that right after.
    const slot: Slot<Req, Rep> = { worker, task: null, ready: false, referenced: true };
    worker.on('message', (msg: Rep | WorkerReady) => {
      if (!slot.ready) {
        slot.ready = true;
        this.startFailures = 0;
        this.pump();
        return;
      }
      const task = slot.task;
      slot.task = null;
      task?.resolve(msg as Rep);
      this.pump();
    });
    const fail = (err: Error): void => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      this.slots.splice(i, 1);
      const what = slot.ready ? 'while working' : 'before loading';
      slot.task?.reject(new WorkerDiedError(`${this.opts.name} worker died ${what}: ${err.message}`, !slot.ready));
      slot.task = null;
      if (this.closed) return;
      if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
        const e = new WorkerDiedError(`${this.opts.name} workers fail to start: ${err.message}`, true);
        for (const t of this.queue.splice(0)) t.reject(e);
        this.startFailures = 0;
      }
      this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    this.slots.push(slot);
  }
}

/**
 * Worker side: answers each request with `handle`'s reply (moving its `transfer` list back), after
 * announcing readiness. `handle` must not throw; it turns failures into replies of its own shape.
 */
export function serveRequests<Req, Rep>(handle: (req: Req) => { reply: Rep; transfer?: Transferable[] }): void {
  const port = parentPort;
  // Loaded on the main thread (e.g. by a test importing it): nothing to serve.
  if (!port) return;
  port.on('message', (req: Req) => {
    const { reply, transfer } = handle(req);
    port.postMessage(reply, transfer ?? []);
  });
  const ready: WorkerReady = { ready: true };
  port.postMessage(ready);
}
