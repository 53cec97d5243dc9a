// Runs dedup.ts off the main thread: the comparison reads and decompresses every block a step wrote
// plus the same range of the lowers, which for a large step is seconds of CPU that must not stall the
// event loop (progress, registry traffic, the FUSE devices' remote reads, other builds).
// The threads are kept: a small WarmPool (src/overlaybd/worker-pool.ts), started on first use, reused
// by every later seal (starting one costs a few hundred milliseconds), unreferenced while idle so they
// never keep the process alive, and closed by closeDedupWorkers(). A job is plain data (RW pair paths,
// lower specs); when some lowers are registry blobs, the job carries a MessagePort to the
// RemoteFetcher (remote-channel.ts protocol): one the fetcher serves on its own thread when it can
// (`connect()`), else a fresh channel the main thread serves; either way the worker reads only the
// ranges it compares. The answer is the kept mappings and the statistics. This module is also the
// worker's entry point.
import { availableParallelism } from 'node:os';
import { MessageChannel, isMainThread, threadId, workerData, type MessagePort } from 'node:worker_threads';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { WarmPool, serveRequests } from '../../src/overlaybd/worker-pool.js';
import type { Mapping } from '../../src/overlaybd/segment.js';
import { ObdkitError } from '../../src/util/errors.js';
import type { LowerSpec } from '../device/lower-source.js';
import { channelLowerSource, serveRemoteReads, type RemoteFetcher } from '../device/remote-channel.js';
import { dedupAgainstLowers, type DedupResult } from './dedup.js';
import { lowerSpecOf, openLowerBlobs, type SealLower } from './lower-blobs.js';

const MARKER = 'obdkit-dedup';

interface Job {
  upper: { data: string; index: string };
  lowers: LowerSpec[];
  /** Present when some lowers are remote: range requests go to the main thread through it. */
  port?: MessagePort;
}

type Reply =
  | { ok: true; mappings: Mapping[]; stats: DedupResult['stats']; threadId: number }
  | { ok: false; message: string; code?: string };

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

let pool: WarmPool<Job, Reply> | undefined;
/** Worker thread ids that answered jobs, most recent last (bounded). */
const answeredBy: number[] = [];

function dedupPool(): WarmPool<Job, Reply> {
  if (!pool || pool.isClosed) pool = new WarmPool({ url: new URL(import.meta.url), threads: MAX_WORKERS, name: 'dedup', workerData: { [MARKER]: true } });
  return pool;
}

/** dedupAgainstLowers for an RW pair over lower blobs, computed on a pooled worker thread. */
export async function dedupInWorker(upper: { data: string; index: string }, lowers: readonly SealLower[], opts: DedupOptions = {}): Promise<DedupResult> {
  const specs = lowers.map(lowerSpecOf);
  const remote = specs.find((l) => l.kind === 'remote');
  if (remote && !opts.remote) {
    throw new ObdkitError('ENOTSUP', 'remote lower layer without a fetcher to read it', { ref: remote.kind === 'remote' ? remote.digest : '' });
  }
  // The job's range channel: served by the fetcher's own thread when it can (worker/build/fetch-thread.ts),
  // else by this thread for as long as the job runs.
  let mine: MessagePort | undefined;
  let theirs: MessagePort | undefined;
  if (remote && opts.remote) {
    if (opts.remote.connect) {
      theirs = opts.remote.connect();
    } else {
      const ch = new MessageChannel();
      mine = ch.port1;
      theirs = ch.port2;
      serveRemoteReads(mine, opts.remote);
    }
  }
  try {
    const job: Job = { upper: { ...upper }, lowers: specs, ...(theirs ? { port: theirs } : {}) };
    const r = await dedupPool().run(job, theirs ? [theirs] : []);
    if (!r.ok) throw new ObdkitError(r.code ?? 'EDEDUP', r.message, { file: upper.data });
    answeredBy.push(r.threadId);
    if (answeredBy.length > 64) answeredBy.shift();
    return { mappings: r.mappings, stats: r.stats };
  } finally {
    mine?.close();
  }
}

/** Threads the pool has started so far, and the thread ids of the last answers (oldest first). */
export function dedupWorkerStats(): { started: number; answeredBy: readonly number[] } {
  return { started: pool?.spawned ?? 0, answeredBy: [...answeredBy] };
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

if (!isMainThread && isWorkerOfThisModule(workerData)) {
  serveRequests<Job, Reply>((job) => {
    try {
      const r = runJob(job);
      return { reply: { ok: true, mappings: r.mappings, stats: r.stats, threadId } };
    } catch (err) {
      const e = err as { message?: string; code?: unknown };
      return { reply: { ok: false, message: e.message ?? String(err), ...(typeof e.code === 'string' ? { code: e.code } : {}) } };
    } finally {
      job.port?.close();
    }
  });
}
