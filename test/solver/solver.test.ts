// Solver behaviour over small hand-built graphs. The executor is the solver's real seam: a plain function
// that records which vertices it ran and returns a result derived from its inputs.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Solver, StepError, type Executor, type ProgressEvent } from '../../src/solver/solver.js';
import { vertexId, type BuildGraph, type Op, type Vertex, type VertexId } from '../../src/solver/ops.js';
import { computeCacheKeys, type ContentRequest } from '../../src/solver/cache-key.js';

type Res = { out: string };

class GraphBuilder {
  readonly graph: BuildGraph = { vertices: {} };
  add(name: string, op: Op, inputs: VertexId[] = [], extra: Partial<Vertex> = {}): VertexId {
    const id = vertexId(op, inputs);
    this.graph.vertices[id] = { id, op, inputs, name, ...extra };
    return id;
  }
  image(ref: string): VertexId {
    return this.add(`FROM ${ref}`, { kind: 'image', ref, platform: { os: 'linux', architecture: 'amd64' } });
  }
  run(name: string, root: VertexId, cmd: string, extra: Partial<Vertex> = {}): VertexId {
    const op: Op = { kind: 'exec', rootfs: root, args: ['/bin/sh', '-c', cmd], env: [], cwd: '/', user: '', network: 'default', mounts: [] };
    return this.add(name, op, [root], extra);
  }
  copy(name: string, base: VertexId, from: VertexId, src: string): VertexId {
    const op: Op = {
      kind: 'file',
      base,
      actions: [
        {
          action: 'copy', from, src: [src], dest: '/', link: false, parents: false, followSymlinks: true, excludes: [],
          unpack: false, dirContents: true, allowWildcard: true, allowEmptyWildcard: false, createDestPath: true,
        },
      ],
    };
    return this.add(name, op, [base, from]);
  }
}

/** Records calls; optionally waits on a gate so tests can observe overlap. */
function recordingExecutor(opts: { delay?: (name: string) => Promise<void>; fail?: string } = {}) {
  const calls: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const executor: Executor<Res> = {
    async exec(v, inputs, ctx) {
      calls.push(v.name);
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        ctx.log(`running ${v.name}\n`);
        if (opts.delay) await opts.delay(v.name);
        if (opts.fail === v.name) throw new Error('exit code: 2');
        return { out: `${v.name}(${inputs.map((i) => i.out).join(',')})` };
      } finally {
        running--;
      }
    },
  };
  return { executor, calls, max: () => maxRunning };
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

async function withStateRoot(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'obdkit-solver-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function chain(): { g: GraphBuilder; target: VertexId } {
  const g = new GraphBuilder();
  const base = g.image('docker.io/library/alpine@sha256:' + 'a'.repeat(64));
  const s1 = g.run('[1/2] RUN a', base, 'a');
  const target = g.run('[2/2] RUN b', s1, 'b');
  return { g, target };
}

describe('solver', () => {
  test('runs every vertex once, dependencies first, and returns the target result', async () => {
    const { g, target } = chain();
    const rec = recordingExecutor();
    const r = await new Solver<Res>().solve(g.graph, target, { executor: rec.executor });
    assert.deepEqual(rec.calls, ['FROM docker.io/library/alpine@sha256:' + 'a'.repeat(64), '[1/2] RUN a', '[2/2] RUN b']);
    assert.match(r.result.out, /^\[2\/2\] RUN b\(\[1\/2\] RUN a\(FROM .*\(\)\)\)$/);
    assert.equal(r.cached, false);
  });

  test('second solve is answered from the cache: executor called 0 times', async () => {
    const { g, target } = chain();
    const solver = new Solver<Res>();
    const first = recordingExecutor();
    const r1 = await solver.solve(g.graph, target, { executor: first.executor });
    const second = recordingExecutor();
    const events: ProgressEvent[] = [];
    const r2 = await solver.solve(g.graph, target, { executor: second.executor, progress: (e) => events.push(e) });
    assert.equal(second.calls.length, 0);
    assert.deepEqual(r2.result, r1.result);
    assert.equal(r2.cached, true);
    assert.deepEqual(events.map((e) => e.type), ['cached']);
  });

  test('a changed step re-runs itself and what follows, reusing what precedes', async () => {
    const solver = new Solver<Res>();
    const a = chain();
    await solver.solve(a.g.graph, a.target, { executor: recordingExecutor().executor });
    const g = new GraphBuilder();
    const base = g.image('docker.io/library/alpine@sha256:' + 'a'.repeat(64));
    const s1 = g.run('[1/2] RUN a', base, 'a');
    const target = g.run('[2/2] RUN c', s1, 'c');
    const rec = recordingExecutor();
    await solver.solve(g.graph, target, { executor: rec.executor });
    assert.deepEqual(rec.calls, ['[2/2] RUN c']);
  });

  test('noCache runs everything again', async () => {
    const { g, target } = chain();
    const solver = new Solver<Res>();
    await solver.solve(g.graph, target, { executor: recordingExecutor().executor });
    const rec = recordingExecutor();
    const r = await solver.solve(g.graph, target, { executor: rec.executor, noCache: true });
    assert.equal(rec.calls.length, 3);
    assert.equal(r.cached, false);
  });

  test('a noCache solve never joins a concurrent solve that may use the cache', async () => {
    const { g, target } = chain();
    const solver = new Solver<Res>();
    await solver.solve(g.graph, target, { executor: recordingExecutor().executor });
    const cachedRun = recordingExecutor({ delay: tick });
    const freshRun = recordingExecutor({ delay: tick });
    const [a, b] = await Promise.all([
      solver.solve(g.graph, target, { executor: cachedRun.executor }),
      solver.solve(g.graph, target, { executor: freshRun.executor, noCache: true }),
    ]);
    assert.equal(a.cached, true);
    assert.equal(b.cached, false);
    assert.equal(cachedRun.calls.length, 0);
    assert.equal(freshRun.calls.length, 3);
  });

  test('an aborted solve stops before running more steps', async () => {
    const { g, target } = chain();
    const ac = new AbortController();
    const rec = recordingExecutor({
      delay: async (name) => {
        if (name.includes('RUN a')) ac.abort(new Error('build cancelled'));
      },
    });
    await assert.rejects(new Solver<Res>().solve(g.graph, target, { executor: rec.executor, signal: ac.signal }), /build cancelled/);
    assert.ok(!rec.calls.includes('[2/2] RUN b'));
  });

  test('ignoreCache on one vertex re-runs only that vertex and its dependents', async () => {
    const solver = new Solver<Res>();
    const { g, target } = chain();
    await solver.solve(g.graph, target, { executor: recordingExecutor().executor });
    const s1 = g.graph.vertices[target]!.inputs[0]!;
    g.graph.vertices[s1]!.ignoreCache = true;
    // The target itself is still cached: its key does not change, so it is answered without its inputs.
    const rec = recordingExecutor();
    await solver.solve(g.graph, s1, { executor: rec.executor });
    assert.deepEqual(rec.calls, ['[1/2] RUN a']);
  });

  test('two concurrent solves of the same graph execute each vertex once', async () => {
    const { g, target } = chain();
    const solver = new Solver<Res>();
    const rec = recordingExecutor({ delay: tick });
    const ev1: ProgressEvent[] = [];
    const ev2: ProgressEvent[] = [];
    const [a, b] = await Promise.all([
      solver.solve(g.graph, target, { executor: rec.executor, progress: (e) => ev1.push(e) }),
      solver.solve(g.graph, target, { executor: rec.executor, progress: (e) => ev2.push(e) }),
    ]);
    assert.equal(rec.calls.length, 3);
    assert.deepEqual(a.result, b.result);
    // Both builds show the step, started and completed.
    for (const ev of [ev1, ev2]) {
      const names = ev.filter((e) => e.type === 'completed').map((e) => e.name);
      assert.ok(names.includes('[2/2] RUN b'), JSON.stringify(names));
    }
  });

  test('identical vertices in different graphs share one execution', async () => {
    const solver = new Solver<Res>();
    const g1 = new GraphBuilder();
    const b1 = g1.image('docker.io/library/alpine@sha256:' + 'b'.repeat(64));
    const t1 = g1.run('[1/1] RUN make', b1, 'make');
    const g2 = new GraphBuilder();
    const b2 = g2.image('docker.io/library/alpine@sha256:' + 'b'.repeat(64));
    const t2 = g2.run('[app 1/1] RUN make', b2, 'make');
    assert.equal(t1, t2, 'names do not change vertex ids');
    const rec = recordingExecutor({ delay: tick });
    await Promise.all([
      solver.solve(g1.graph, t1, { executor: rec.executor }),
      solver.solve(g2.graph, t2, { executor: rec.executor }),
    ]);
    assert.equal(rec.calls.length, 2);
  });

  test('independent stages run in parallel, bounded by the concurrency limit', async () => {
    const build = () => {
      const g = new GraphBuilder();
      const base = g.image('docker.io/library/alpine@sha256:' + 'c'.repeat(64));
      const stages = ['a', 'b', 'c', 'd'].map((s) => g.run(`[${s} 1/1] RUN ${s}`, base, s));
      let t = g.run('[final 1/5] RUN x', base, 'x');
      for (const s of stages) t = g.copy(`COPY --from=${s}`, t, s, '/out');
      return { g, t };
    };
    let gateOpen!: () => void;
    const gate = new Promise<void>((r) => (gateOpen = r));
    let waiting = 0;
    const rec = recordingExecutor({
      delay: async (name) => {
        if (name.startsWith('FROM')) return;
        waiting++;
        if (waiting >= 2) gateOpen();
        await Promise.race([gate, new Promise((r) => setTimeout(r, 2000))]);
      },
    });
    const { g, t } = build();
    await new Solver<Res>({ concurrency: 2 }).solve(g.graph, t, { executor: rec.executor });
    assert.equal(rec.max(), 2, 'two independent ops overlapped, never more than the limit');
    assert.equal(rec.calls.length, 10);
  });

  test('a failing step rejects the solve with its name and location; dependents never start', async () => {
    const g = new GraphBuilder();
    const base = g.image('docker.io/library/alpine@sha256:' + 'd'.repeat(64));
    const bad = g.run('[2/3] RUN false', base, 'false', { location: { file: 'Dockerfile', line: 7 } });
    const target = g.run('[3/3] RUN after', bad, 'after');
    const rec = recordingExecutor({ fail: '[2/3] RUN false' });
    const events: ProgressEvent[] = [];
    const solver = new Solver<Res>();
    await assert.rejects(solver.solve(g.graph, target, { executor: rec.executor, progress: (e) => events.push(e) }), (err: unknown) => {
      assert.ok(err instanceof StepError);
      assert.equal(err.context.file, 'Dockerfile');
      assert.equal(err.context.line, 7);
      assert.match(err.message, /^Dockerfile:7: \[2\/3\] RUN false: exit code: 2$/);
      return true;
    });
    assert.ok(!rec.calls.includes('[3/3] RUN after'));
    const errEv = events.find((e) => e.type === 'error');
    assert.ok(errEv && errEv.type === 'error' && errEv.name === '[2/3] RUN false');
    // Nothing was cached for the failed step: a retry runs it again.
    const again = recordingExecutor();
    await solver.solve(g.graph, target, { executor: again.executor });
    assert.deepEqual(again.calls, ['[2/3] RUN false', '[3/3] RUN after']);
  });

  test('logs reach the progress callback with the vertex they belong to', async () => {
    const { g, target } = chain();
    const logs: string[] = [];
    await new Solver<Res>().solve(g.graph, target, {
      executor: recordingExecutor().executor,
      progress: (e) => {
        if (e.type === 'log') logs.push(`${e.name}|${Buffer.from(e.data).toString()}`);
      },
    });
    assert.ok(logs.includes('[2/2] RUN b|running [2/2] RUN b\n'));
  });

  test('settle: dependents get the early result at once; the index, joiners and solve() get the settled one', async () => {
    const { g, target } = chain();
    const gates = new Map<string, () => void>();
    const seen: string[] = [];
    const executor: Executor<Res> = {
      async exec(v, inputs) {
        seen.push(`${v.name}<-${inputs.map((i) => i.out).join(',')}`);
        return { out: `early:${v.name}` };
      },
      settle(r) {
        // Each result settles only when the test says so, after its dependents have already run.
        return new Promise((resolve) => gates.set(r.out, () => resolve({ out: r.out.replace('early:', 'final:') })));
      },
    };
    const solver = new Solver<Res>();
    const events: ProgressEvent[] = [];
    const solving = solver.solve(g.graph, target, { executor, progress: (e) => events.push(e) });
    while (gates.size < 3) await tick();
    // The second RUN ran on the first's early result, before anything settled.
    assert.deepEqual(seen.slice(1), ['[1/2] RUN a<-early:FROM docker.io/library/alpine@sha256:' + 'a'.repeat(64), '[2/2] RUN b<-early:[1/2] RUN a']);
    assert.equal(events.filter((e) => e.type === 'completed').length, 0);
    // A second solve joining now waits for the settled form.
    const joined = solver.solve(g.graph, target, { executor: recordingExecutor().executor });
    for (const open of gates.values()) open();
    const r = await solving;
    assert.equal(r.result.out, 'final:[2/2] RUN b');
    assert.equal((await joined).result.out, 'final:[2/2] RUN b');
    assert.equal(events.filter((e) => e.type === 'completed').length, 3);
    const again = await solver.solve(g.graph, target, { executor: recordingExecutor().executor });
    assert.equal(again.cached, true);
    assert.equal(again.result.out, 'final:[2/2] RUN b');
  });

  test('a settle that fails fails the solve under its own step, and caches nothing for it', async () => {
    const { g, target } = chain();
    const executor: Executor<Res> = {
      async exec(v) {
        return { out: v.name };
      },
      async settle(r) {
        if (r.out === '[1/2] RUN a') {
          await tick();
          throw new Error('seal failed');
        }
        // A later step's settle waits on its parent's, as a real chain does, and fails with it.
        await new Promise((resolve) => setTimeout(resolve, 30));
        if (r.out === '[2/2] RUN b') throw new Error('parent layer missing');
        return r;
      },
    };
    const solver = new Solver<Res>();
    await assert.rejects(solver.solve(g.graph, target, { executor }), (err: unknown) => {
      assert.ok(err instanceof StepError);
      assert.match(err.message, /\[1\/2\] RUN a: seal failed/);
      return true;
    });
    // The dependent's settle is still failing in the background; a retry after it runs both again.
    await new Promise((resolve) => setTimeout(resolve, 60));
    const rec = recordingExecutor();
    await solver.solve(g.graph, target, { executor: rec.executor });
    assert.deepEqual(rec.calls, ['[1/2] RUN a', '[2/2] RUN b']);
  });

  test('the cache index persists across Solver instances', async () => {
    await withStateRoot(async (dir) => {
      const { g, target } = chain();
      await new Solver<Res>({ stateRoot: dir }).solve(g.graph, target, { executor: recordingExecutor().executor });
      const files = await readdir(join(dir, 'cache-index'), { recursive: true });
      assert.equal(files.filter((f) => String(f).endsWith('.json')).length, 3);
      assert.ok(!files.some((f) => String(f).endsWith('.tmp')));
      const rec = recordingExecutor();
      const r = await new Solver<Res>({ stateRoot: dir }).solve(g.graph, target, { executor: rec.executor });
      assert.equal(rec.calls.length, 0);
      assert.equal(r.cached, true);
    });
  });
});

describe('cache keys', () => {
  test('context content feeds the key of a copy, through the content hasher', async () => {
    const build = () => {
      const g = new GraphBuilder();
      const base = g.image('docker.io/library/alpine@sha256:' + 'e'.repeat(64));
      const ctx = g.add('[internal] load build context', { kind: 'local', name: 'context', excludes: ['*.md'] });
      const t = g.copy('[2/2] COPY app /', base, ctx, 'app');
      return { g, t, ctx };
    };
    const seen: ContentRequest[] = [];
    let content = 'v1';
    const hasher = async (r: ContentRequest) => {
      seen.push(r);
      return `sha256:${content}`;
    };
    const { g, t } = build();
    const k1 = (await computeCacheKeys(g.graph, t, hasher)).get(t);
    const k1again = (await computeCacheKeys(g.graph, t, hasher)).get(t);
    content = 'v2';
    const k2 = (await computeCacheKeys(g.graph, t, hasher)).get(t);
    assert.equal(k1, k1again);
    assert.notEqual(k1, k2);
    assert.deepEqual(seen[0]!.paths, ['app']);
    assert.deepEqual(seen[0]!.excludes, ['*.md']);
    assert.equal(seen[0]!.source.op.kind, 'local');
  });

  test('solver re-runs a copy when context content changes', async () => {
    await withStateRoot(async (dir) => {
      let content = 'v1';
      const mk = () =>
        new Solver<Res>({ stateRoot: dir, contentHasher: async () => `sha256:${content}` });
      const g = new GraphBuilder();
      const base = g.image('docker.io/library/alpine@sha256:' + 'f'.repeat(64));
      const ctx = g.add('[internal] load build context', { kind: 'local', name: 'context', excludes: [] });
      const t = g.copy('[2/2] COPY . /', base, ctx, '.');
      await mk().solve(g.graph, t, { executor: recordingExecutor().executor });
      const same = recordingExecutor();
      await mk().solve(g.graph, t, { executor: same.executor });
      assert.equal(same.calls.length, 0);
      content = 'v2';
      const changed = recordingExecutor();
      await mk().solve(g.graph, t, { executor: changed.executor });
      // The context itself is transferred afresh for the step that needs it, never taken from the index.
      assert.deepEqual(changed.calls, ['[internal] load build context', '[2/2] COPY . /']);
    });
  });

  test('a graph reading the context without a hasher is refused', async () => {
    const g = new GraphBuilder();
    const base = g.image('x@sha256:' + '1'.repeat(64));
    const ctx = g.add('ctx', { kind: 'local', name: 'context', excludes: [] });
    const t = g.copy('COPY', base, ctx, '.');
    await assert.rejects(computeCacheKeys(g.graph, t), /no content hasher/);
  });
});

describe('graph order', () => {
  test('topoOrder handles deep chains and rejects cycles and dangling inputs', async () => {
    const { topoOrder } = await import('../../src/solver/ops.js');
    const g = new GraphBuilder();
    let t = g.image('x@sha256:' + '2'.repeat(64));
    for (let i = 0; i < 20000; i++) t = g.run(`RUN ${i}`, t, String(i));
    const order = topoOrder(g.graph, t);
    assert.equal(order.length, 20001);
    assert.equal(order[0]!.op.kind, 'image');
    assert.equal(order[order.length - 1]!.id, t);
    const a = g.graph.vertices[t]!;
    const cyclic: BuildGraph = { vertices: { a: { ...a, id: 'a', inputs: ['b'] }, b: { ...a, id: 'b', inputs: ['a'] } } };
    assert.throws(() => topoOrder(cyclic, 'a'), /cycle/);
    assert.throws(() => topoOrder({ vertices: { a: { ...a, id: 'a', inputs: ['zz'] } } }, 'a'), /not in the graph/);
  });
});
