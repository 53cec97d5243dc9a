// Runs any build graph. Keys first (cache-key.ts), then top-down from the target: a vertex whose key is in
// the cache index is answered without touching its inputs; otherwise its inputs are solved (independent
// branches in parallel) and the executor runs the op. One execution per cache key at a time, across every
// solve on this Solver (concurrent builds share the work); a limit bounds how many ops run at once.
// The solver knows ops only as data: what an op means is the executor's business (worker/).
import { ObdkitError } from '../util/errors.js';
import { computeCacheKeys, type ContentHasher } from './cache-key.js';
import { FileCacheIndex, MemoryCacheIndex, type CacheIndex } from './cache-index.js';
import type { BuildGraph, Vertex, VertexId } from './ops.js';

export interface ExecContext {
  /** The vertex's cache key (stable names for cache mounts, layer files, ...). */
  key: string;
  log(data: string | Uint8Array, stream?: 1 | 2): void;
  signal: AbortSignal;
}

/** Implements op kinds. `inputs[i]` is the result of `vertex.inputs[i]`. */
export interface Executor<R> {
  exec(vertex: Vertex, inputs: R[], ctx: ExecContext): Promise<R>;
  /**
   * Optional: the lasting form of a result that `exec` handed back before all of its work was done
   * (a layer still being sealed while the next step already runs on the same device). Dependent
   * vertices of the same solve get the early result at once; the cache index records, other solves
   * joining the execution receive, and solve() returns only what this resolves to. A rejection fails
   * the step and the solve.
   */
  settle?(result: R): Promise<R>;
}

interface EventBase {
  vertex: VertexId;
  name: string;
  inputs: VertexId[];
  key: string;
  time: Date;
}

/** Progress as the CLI and the Status stream render it: one started, then cached / completed / error. */
export type ProgressEvent =
  | (EventBase & { type: 'started' })
  | (EventBase & { type: 'cached' })
  | (EventBase & { type: 'completed' })
  | (EventBase & { type: 'error'; error: string })
  | (EventBase & { type: 'log'; stream: 1 | 2; data: Uint8Array });

export interface SolveOptions<R> {
  executor: Executor<R>;
  /** Ignore cached results (still record new ones). Per-vertex `ignoreCache` applies either way. */
  noCache?: boolean;
  progress?: (e: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface SolveResult<R> {
  result: R;
  key: string;
  cached: boolean;
}

export interface SolverOptions<R> {
  /** Directory for the persistent cache index; without it results live in memory only. */
  stateRoot?: string;
  index?: CacheIndex<R>;
  /** Most ops executing at once across all solves. */
  concurrency?: number;
  contentHasher?: ContentHasher;
}

/** A failed step: names the step and where it was written, and keeps the executor's error as cause. */
export class StepError extends ObdkitError {
  constructor(vertex: Vertex, cause: unknown) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    super('ESTEP', `${vertex.name}: ${msg}`, { file: vertex.location?.file, line: vertex.location?.line, vertex: vertex.id }, { cause });
    this.name = 'StepError';
  }
}

/** A vertex's outcome: `result` as early as the executor gave it, `settled` its lasting form. */
interface Outcome<R> {
  result: R;
  cached: boolean;
  settled: Promise<R>;
}

export class Solver<R = unknown> {
  readonly index: CacheIndex<R>;
  private readonly limit: Semaphore;
  private readonly hasher: ContentHasher | undefined;
  /** Executions in progress (until settled), by cache key; shared by every solve on this instance. */
  private readonly inflight = new Map<string, Promise<Outcome<R>>>();

  constructor(opts: SolverOptions<R> = {}) {
    this.index = opts.index ?? (opts.stateRoot ? new FileCacheIndex<R>(opts.stateRoot) : new MemoryCacheIndex<R>());
    this.limit = new Semaphore(Math.max(1, opts.concurrency ?? 4));
    this.hasher = opts.contentHasher;
  }

  async solve(graph: BuildGraph, target: VertexId, opts: SolveOptions<R>): Promise<SolveResult<R>> {
    const keys = await computeCacheKeys(graph, target, this.hasher);
    const signal = opts.signal ?? new AbortController().signal;
    const memo = new Map<VertexId, Promise<Outcome<R>>>();
    // Background completions of the vertices this solve ran: all must succeed before it returns.
    const settling: Promise<R>[] = [];

    const emit = (v: Vertex, e: { type: 'started' | 'cached' | 'completed' } | { type: 'error'; error: string }): void => {
      opts.progress?.({ ...e, vertex: v.id, name: v.name, inputs: v.inputs, key: keys.get(v.id)!, time: new Date() });
    };

    const solveVertex = (id: VertexId): Promise<Outcome<R>> => {
      let p = memo.get(id);
      if (p) return p;
      const v = graph.vertices[id]!;
      const key = keys.get(id)!;
      // A solve that must not reuse results may not join one that may: they share work only within a mode.
      const flight = opts.noCache || v.ignoreCache ? `${key}#nocache` : key;
      p = this.shared(flight, () => this.run(v, key, opts, signal, emit, solveVertex, settling), v, emit);
      memo.set(id, p);
      return p;
    };

    const r = await solveVertex(target);
    // Every background completion first: a failure is reported by the step it happened in (the first
    // to fail), not by a later step that was waiting on it.
    for (let done = 0; done < settling.length; ) {
      const batch = settling.slice(done);
      done = settling.length;
      await Promise.all(batch);
    }
    const result = await r.settled;
    return { result, key: keys.get(target)!, cached: r.cached };
  }

  /** Joins an execution already running under `flight` (cache key + mode), or starts one. */
  private shared(
    flight: string,
    start: () => Promise<Outcome<R>>,
    v: Vertex,
    emit: (v: Vertex, e: { type: 'started' | 'cached' | 'completed' } | { type: 'error'; error: string }) => void,
  ): Promise<Outcome<R>> {
    const running = this.inflight.get(flight);
    if (running) {
      // Another solve is doing this exact step: show it here too, and wait for its lasting outcome
      // (an early result may refer to work only that solve's executor is still finishing).
      emit(v, { type: 'started' });
      return running.then((r) => r.settled.then((result) => ({ result, cached: r.cached, settled: r.settled }))).then(
        (r) => {
          emit(v, { type: r.cached ? 'cached' : 'completed' });
          return r;
        },
        (err: unknown) => {
          emit(v, { type: 'error', error: err instanceof Error ? err.message : String(err) });
          throw err;
        },
      );
    }
    const p = start();
    this.inflight.set(flight, p);
    const clear = (): void => {
      if (this.inflight.get(flight) === p) this.inflight.delete(flight);
    };
    // Until settled, the cache index does not have the result yet: later solves must join, not rerun.
    p.then((r) => r.settled).then(clear, clear);
    return p;
  }

  private async run(
    v: Vertex,
    key: string,
    opts: SolveOptions<R>,
    signal: AbortSignal,
    emit: (v: Vertex, e: { type: 'started' | 'cached' | 'completed' } | { type: 'error'; error: string }) => void,
    solveVertex: (id: VertexId) => Promise<Outcome<R>>,
    settling: Promise<R>[],
  ): Promise<Outcome<R>> {
    // A local source stands for files on the client right now: it is transferred again whenever a step
    // needs it, never answered from the index (steps reading it are keyed by its content instead).
    const volatile = v.op.kind === 'local';
    if (!opts.noCache && !v.ignoreCache && !volatile) {
      const hit = await this.index.get(key);
      if (hit) {
        emit(v, { type: 'cached' });
        return { result: hit.result, cached: true, settled: Promise.resolve(hit.result) };
      }
    }
    const inputs = await Promise.all(v.inputs.map((i) => solveVertex(i)));
    signal.throwIfAborted();
    const release = await this.limit.acquire();
    emit(v, { type: 'started' });
    let result: R;
    try {
      const ctx: ExecContext = {
        key,
        signal,
        log: (data, stream = 1) => {
          const bytes = typeof data === 'string' ? Buffer.from(data) : data;
          opts.progress?.({ type: 'log', vertex: v.id, name: v.name, inputs: v.inputs, key, time: new Date(), stream, data: bytes });
        },
      };
      result = await opts.executor.exec(v, inputs.map((r) => r.result), ctx);
    } catch (err) {
      const e = err instanceof StepError ? err : new StepError(v, err);
      emit(v, { type: 'error', error: e.message });
      throw e;
    } finally {
      release();
    }
    const early = result;
    const settled = (async (): Promise<R> => {
      let final: R;
      try {
        final = opts.executor.settle ? await opts.executor.settle(early) : early;
      } catch (err) {
        const e = err instanceof StepError ? err : new StepError(v, err);
        emit(v, { type: 'error', error: e.message });
        throw e;
      }
      if (!volatile) await this.index.put({ key, name: v.name, createdAt: new Date().toISOString(), result: final });
      emit(v, { type: 'completed' });
      return final;
    })();
    // Failures are reported through solve(); this keeps one that nobody awaits any more from being unhandled.
    settled.catch(() => undefined);
    settling.push(settled);
    return { result: early, cached: false, settled };
  }
}

/** Counting semaphore; waiters are served in arrival order. */
class Semaphore {
  private free: number;
  private readonly waiters: (() => void)[] = [];

  constructor(n: number) {
    this.free = n;
  }

  async acquire(): Promise<() => void> {
    if (this.free > 0) {
      this.free--;
    } else {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next) next();
      else this.free++;
    };
  }
}
