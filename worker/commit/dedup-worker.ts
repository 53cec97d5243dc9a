// Runs dedup.ts off the main thread: the comparison reads and decompresses every block a step wrote
// plus the same range of the lowers, which for a large step is seconds of CPU that must not stall the
// event loop (progress, registry traffic, the FUSE devices' remote reads, other builds).
// The threads are kept: a small pool, started on first use, reused by every later seal (starting one
// costs a few hundred milliseconds), unref()'d while idle so they never keep the process alive, and
// closed by closeDedupWorkers(). A job is plain data (RW pair paths, lower specs); when some lowers
// are registry blobs, the job carries a MessagePort to the RemoteFetcher (remote-channel.ts protocol):
// one the fetcher serves on its own thread when it can (`connect()`), else a fresh channel the main
// thread serves; either way the worker reads only the ranges it compares. The answer is the kept mappings and the statistics. This module is also the worker's
// entry point.
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker, isMainThread, parentPort, threadId, workerData, type MessagePort } from 'node:worker_threads';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import type { Mapping } from '../../src/overlaybd/segment.js';
import { ObdkitError } from '../../src/util/errors.js';
import type { LowerSpec } from '../device/lower-source.js';
import { channelLowerSource, serveRemoteReads, type RemoteFetcher } from '../device/remote-channel.js';
import { dedupAgainstLowers, type DedupResult } from './dedup.js';
import { lowerSpecOf, openLowerBlobs, type SealLower } from './lower-blobs.js';

const MARKER = 'obdkit-dedup';

interface Job {
  id: number;
  upper: { data: string; index: string };
  lowers: LowerSpec[];
  /** Present when some lowers are remote: range requests go to the main thread through it. */
  port?: MessagePort;
}

type Reply =
  | { id: number; ok: true; mappings: Mapping[]; stats: DedupResult['stats']; threadId: number }
  | { id: number; ok: false; message: string; code?: string };

export interface DedupOptions {
  /** Serves the remote lowers' ranges (the device's RegistryFetcher); required when there are any. */
  remote?: RemoteFetcher;
}

/** Threads at most; more concurrent seals wait their turn. */
const MAX_WORKERS = Math.max(1, Math.min(2, availableParallelism()));

function runJob(job: Job): DedupResult {
  const rw = RwLayer.open(job.upper.data, job.upper.index, { readOnly: true });
  try {
    const lowers = openLowerBlobs(job.lowers, channelLowerSource(job.port));
    try {
      return dedupAgainstLowers(rw, lowers.stack);
    } finally {
      lowers.close();
    }
  } finally {
    rw.close();
  }
}

interface Pending {
  upper: Job['upper'];
  lowers: LowerSpec[];
  remote: RemoteFetcher | undefined;
  resolve(r: DedupResult): void;
  reject(err: unknown): void;
}

interface Running {
  job: Pending;
  id: number;
  /** Main-thread end of the job's range channel. */
  port: MessagePort | undefined;
}

class DedupPool {
  private readonly workers = new Set<Worker>();
  private readonly idle: Worker[] = [];
  private readonly running = new Map<Worker, Running>();
  private readonly queue: Pending[] = [];
  private nextId = 1;
  /** Threads this pool has started (for tests and benches). */
  started = 0;
  /** Worker thread ids that answered jobs, most recent last (bounded). */
  readonly answeredBy: number[] = [];

  run(job: Pending): void {
    this.queue.push(job);
    this.pump();
  }

  async close(): Promise<void> {
    for (const p of this.queue.splice(0)) p.reject(new ObdkitError('ECLOSED', 'dedup workers closed'));
    const all = [...this.workers];
    this.workers.clear();
    this.idle.length = 0;
    for (const [w, r] of this.running) this.fail(w, r, new ObdkitError('ECLOSED', 'dedup workers closed while a job ran', { file: r.job.upper.data }));
    await Promise.all(all.map((w) => w.terminate()));
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let w = this.idle.pop();
      if (!w) {
        if (this.workers.size >= MAX_WORKERS) return;
        w = this.spawn();
      }
      this.dispatch(w, this.queue.shift()!);
    }
  }

  private spawn(): Worker {
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const w = new Worker(new URL(import.meta.url), { workerData: { [MARKER]: true }, execArgv });
    this.started++;
    this.workers.add(w);
    w.on('message', (r: Reply) => this.onReply(w, r));
    w.on('error', (err) => this.onDeath(w, err));
    w.on('exit', (code) => this.onDeath(w, new ObdkitError('EDEDUP', `dedup worker exited with code ${code}`)));
    return w;
  }

  private dispatch(w: Worker, p: Pending): void {
    const id = this.nextId++;
    let mine: MessagePort | undefined;
    let theirs: MessagePort | undefined;
    if (p.remote && p.lowers.some((l) => l.kind === 'remote')) {
      if (isConnectable(p.remote)) {
        // Served by the fetcher's own thread (worker/build/fetch-thread.ts); it closes with the job.
        theirs = p.remote.connect();
      } else {
        const ch = new MessageChannel();
        mine = ch.port1;
        theirs = ch.port2;
        serveRemoteReads(mine, p.remote);
      }
    }
    this.running.set(w, { job: p, id, port: mine });
    w.ref();
    const job: Job = { id, upper: p.upper, lowers: p.lowers, ...(theirs ? { port: theirs } : {}) };
    w.postMessage(job, theirs ? [theirs] : []);
  }

  private onReply(w: Worker, r: Reply): void {
    const run = this.running.get(w);
    if (!run || run.id !== r.id) return;
    if (r.ok) {
      this.answeredBy.push(r.threadId);
      if (this.answeredBy.length > 64) this.answeredBy.shift();
    }
    this.release(w, run);
    if (r.ok) run.job.resolve({ mappings: r.mappings, stats: r.stats });
    else run.job.reject(new ObdkitError(r.code ?? 'EDEDUP', r.message, { file: run.job.upper.data }));
    if (this.workers.has(w)) {
      w.unref();
      this.idle.push(w);
    }
    this.pump();
  }

  private onDeath(w: Worker, err: unknown): void {
    if (!this.workers.delete(w) && !this.running.has(w)) return;
    const i = this.idle.indexOf(w);
    if (i >= 0) this.idle.splice(i, 1);
    const run = this.running.get(w);
    if (run) this.fail(w, run, err);
    this.pump();
  }

  private release(w: Worker, run: Running): void {
    this.running.delete(w);
    run.port?.close();
  }

  private fail(w: Worker, run: Running, err: unknown): void {
    this.release(w, run);
    run.job.reject(err);
  }
}

/** A fetcher that answers on a port of its own, off the main thread. */
function isConnectable(f: RemoteFetcher): f is RemoteFetcher & { connect(): MessagePort } {
  return typeof (f as { connect?: unknown }).connect === 'function';
}

let pool: DedupPool | undefined;

/** dedupAgainstLowers for an RW pair over lower blobs, computed on a pooled worker thread. */
export function dedupInWorker(upper: { data: string; index: string }, lowers: readonly SealLower[], opts: DedupOptions = {}): Promise<DedupResult> {
  const specs = lowers.map(lowerSpecOf);
  const remote = specs.find((l) => l.kind === 'remote');
  if (remote && !opts.remote) {
    return Promise.reject(new ObdkitError('ENOTSUP', 'remote lower layer without a fetcher to read it', { ref: remote.kind === 'remote' ? remote.digest : '' }));
  }
  pool ??= new DedupPool();
  const p = pool;
  return new Promise((resolve, reject) => p.run({ upper: { ...upper }, lowers: specs, remote: opts.remote, resolve, reject }));
}

/** Threads the pool has started so far, and the thread ids of the last answers (oldest first). */
export function dedupWorkerStats(): { started: number; answeredBy: readonly number[] } {
  return { started: pool?.started ?? 0, answeredBy: [...(pool?.answeredBy ?? [])] };
}

/** Terminates the pooled threads (a later call starts new ones); queued jobs are rejected. */
export async function closeDedupWorkers(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.close();
}

function isWorkerOfThisModule(d: unknown): boolean {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

if (!isMainThread && isWorkerOfThisModule(workerData) && parentPort) {
  const out = parentPort;
  out.on('message', (job: Job) => {
    let reply: Reply;
    try {
      const r = runJob(job);
      reply = { id: job.id, ok: true, mappings: r.mappings, stats: r.stats, threadId };
    } catch (err) {
      const e = err as { message?: string; code?: unknown };
      reply = { id: job.id, ok: false, message: e.message ?? String(err), ...(typeof e.code === 'string' ? { code: e.code } : {}) };
    } finally {
      job.port?.close();
    }
    out.postMessage(reply);
  });
}
