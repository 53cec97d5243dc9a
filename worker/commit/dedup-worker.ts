// Runs dedup.ts on a worker thread: the comparison reads and decompresses every block a step wrote
// plus the same range of the lowers, which for a large step is seconds of CPU that must not stall
// the event loop (progress, registry traffic, other builds). The job is plain paths; the answer is
// the kept mappings and the statistics. This module is also the worker's entry point.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import type { Mapping } from '../../src/overlaybd/segment.js';
import { ObdkitError } from '../../src/util/errors.js';
import { dedupAgainstLowers, type DedupResult } from './dedup.js';
import { openLowerBlobs } from './lower-blobs.js';

const MARKER = 'obdkit-dedup';

interface Job {
  [MARKER]: true;
  upper: { data: string; index: string };
  lowers: string[];
}

type Reply = { ok: true; mappings: Mapping[]; stats: DedupResult['stats'] } | { ok: false; message: string; code?: string };

function runJob(job: Job): DedupResult {
  const rw = RwLayer.open(job.upper.data, job.upper.index, { readOnly: true });
  const lowers = openLowerBlobs(job.lowers);
  try {
    return dedupAgainstLowers(rw, lowers.stack);
  } finally {
    lowers.close();
    rw.close();
  }
}

/** dedupAgainstLowers for an RW pair over lower blobs, computed on a worker thread. */
export function dedupInWorker(upper: { data: string; index: string }, lowers: readonly string[]): Promise<DedupResult> {
  return new Promise((resolve, reject) => {
    const job: Job = { [MARKER]: true, upper, lowers: [...lowers] };
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const w = new Worker(new URL(import.meta.url), { workerData: job, execArgv });
    let done = false;
    w.once('message', (r: Reply) => {
      done = true;
      if (r.ok) resolve({ mappings: r.mappings, stats: r.stats });
      else reject(new ObdkitError(r.code ?? 'EDEDUP', r.message, { file: upper.data }));
    });
    w.once('error', (err) => {
      if (done) return;
      done = true;
      reject(err);
    });
    w.once('exit', (code) => {
      if (done) return;
      done = true;
      reject(new ObdkitError('EDEDUP', `dedup worker exited with code ${code} without answering`, { file: upper.data }));
    });
  });
}

function isJob(d: unknown): d is Job {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

if (!isMainThread && isJob(workerData) && parentPort) {
  let reply: Reply;
  try {
    const r = runJob(workerData);
    reply = { ok: true, mappings: r.mappings, stats: r.stats };
  } catch (err) {
    const e = err as { message?: string; code?: unknown };
    reply = { ok: false, message: e.message ?? String(err), ...(typeof e.code === 'string' ? { code: e.code } : {}) };
  }
  parentPort.postMessage(reply);
}
