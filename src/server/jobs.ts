// Builds in flight, keyed by the client-chosen ref of Control.Solve. Status streams and gateway calls for a
// ref can arrive before the Solve that creates the build, so a job exists from the first mention of its
// ref; a ref whose Solve never comes is dropped after a grace period. Finished jobs stay a short while
// so a late Status still replays the build's progress.
import { ObdkitError } from '../util/errors.js';
import type { BuildContext, FrontendResult } from './backend.js';
import { JobProgress } from './progress.js';
import type { Status as RpcStatus } from './gen/google/rpc/status.js';
import type { Definition } from './gen/buildkit/ops.js';

/** What the client hands back through LLBBridge.Return. */
export type ReturnedResult = { result: FrontendResult } | { error: RpcStatus };

export class Job {
  readonly progress: JobProgress;
  readonly abort = new AbortController();
  ctx?: BuildContext;
  /** LLB inputs from Control.Solve, answered by LLBBridge.Inputs. */
  inputs: Record<string, Definition> = {};
  finished = false;
  private startWaiters: (() => void)[] = [];
  private returnWaiter?: (r: ReturnedResult) => void;
  private returnedValue?: ReturnedResult;

  constructor(readonly ref: string) {
    this.progress = new JobProgress(ref);
  }

  get started(): boolean {
    return this.ctx !== undefined;
  }

  start(ctx: BuildContext): void {
    this.ctx = ctx;
    for (const w of this.startWaiters.splice(0)) w();
  }

  onStart(fn: () => void): void {
    if (this.started) fn();
    else this.startWaiters.push(fn);
  }

  /** Records the client's LLBBridge.Return; only the first counts. */
  setReturned(r: ReturnedResult): boolean {
    if (this.returnedValue) return false;
    this.returnedValue = r;
    this.returnWaiter?.(r);
    return true;
  }

  /** Resolves with the client's Return, or rejects when the build is cancelled. */
  waitReturned(): Promise<ReturnedResult> {
    if (this.returnedValue) return Promise.resolve(this.returnedValue);
    const signal = this.abort.signal;
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.returnWaiter = (r) => {
        signal.removeEventListener('abort', onAbort);
        resolve(r);
      };
    });
  }
}

export interface JobRegistryOptions {
  /** How long a ref mentioned only by Status/gateway calls waits for its Solve. */
  startGraceMs?: number;
  /** How long a finished job's progress stays available. */
  retainMs?: number;
}

export class JobRegistry {
  private readonly jobs = new Map<string, Job>();
  private readonly startGraceMs: number;
  private readonly retainMs: number;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(opts: JobRegistryOptions = {}) {
    this.startGraceMs = opts.startGraceMs ?? 10_000;
    this.retainMs = opts.retainMs ?? 60_000;
  }

  ensure(ref: string): Job {
    let job = this.jobs.get(ref);
    if (!job) {
      job = new Job(ref);
      this.jobs.set(ref, job);
      const created = job;
      this.later(this.startGraceMs, () => {
        if (!created.started && this.jobs.get(ref) === created) {
          this.jobs.delete(ref);
          created.progress.end();
        }
      });
    }
    return job;
  }

  get(ref: string): Job | undefined {
    return this.jobs.get(ref);
  }

  /** Waits (up to the grace period) for Control.Solve of `ref` to start the job. */
  waitStarted(ref: string, signal?: AbortSignal): Promise<Job> {
    const job = this.ensure(ref);
    if (job.started) return Promise.resolve(job);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new ObdkitError('ENOJOB', `no build with id ${ref} started`, { ref }));
      }, this.startGraceMs);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason instanceof Error ? signal.reason : new ObdkitError('ECANCELED', 'cancelled', { ref }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      job.onStart(() => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(job);
      });
    });
  }

  /** Marks a job finished, ends its progress and forgets it after the retention time. */
  finish(job: Job, error?: string): void {
    job.finished = true;
    job.progress.end(error);
    this.later(this.retainMs, () => {
      if (this.jobs.get(job.ref) === job) this.jobs.delete(job.ref);
    });
  }

  all(): Job[] {
    return [...this.jobs.values()];
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const j of this.jobs.values()) {
      if (!j.finished) j.abort.abort(new ObdkitError('ESHUTDOWN', 'daemon is shutting down'));
      j.progress.end('daemon is shutting down');
    }
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }
}
