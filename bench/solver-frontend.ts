// Overhead of the parts between a Dockerfile and the executor: translating a long Dockerfile, computing
// cache keys for a large graph, and solving it cold and warm with a no-op executor (memory and on-disk
// cache index). Run after building: `node dist/bench/solver-frontend.js [steps]`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { convertDockerfile } from '../frontend/convert.js';
import { computeCacheKeys } from '../src/solver/cache-key.js';
import { Solver, type Executor } from '../src/solver/solver.js';

const steps = Number(process.argv[2] ?? 500);

function dockerfile(n: number): string {
  const lines = ['ARG BASE=alpine:3.20', 'FROM $BASE AS base', 'ENV A=1 B="two words"', 'WORKDIR /src'];
  for (let i = 0; i < n; i++) {
    if (i % 50 === 0) lines.push(`FROM base AS s${i}`);
    lines.push(i % 3 === 0 ? `COPY file${i}.txt /data/` : `RUN --mount=type=cache,target=/cache echo step ${i} $A > /out${i}`);
  }
  lines.push('FROM base', ...Array.from({ length: Math.ceil(n / 50) }, (_, k) => `COPY --from=s${k * 50} /data /from${k}`));
  return lines.join('\n') + '\n';
}

async function time<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  console.log(`${label.padEnd(44)} ${(performance.now() - t0).toFixed(1).padStart(9)} ms`);
  return r;
}

const text = dockerfile(steps);
const conv = await time(`convert Dockerfile (${steps} steps)`, () =>
  convertDockerfile({ dockerfile: text, resolveImageConfig: async () => ({ digest: 'sha256:' + '0'.repeat(64), config: {} }) }),
);
const n = Object.keys(conv.graph.vertices).length;
const hasher = async (): Promise<string> => 'sha256:' + '1'.repeat(64);
await time(`cache keys (${n} vertices)`, () => computeCacheKeys(conv.graph, conv.target, hasher));

const executor: Executor<{ layer: string }> = { exec: async (v) => ({ layer: v.id }) };
const mem = new Solver<{ layer: string }>({ contentHasher: hasher, concurrency: 4 });
await time('solve cold, memory index', () => mem.solve(conv.graph, conv.target, { executor }));
await time('solve warm, memory index', () => mem.solve(conv.graph, conv.target, { executor }));

const state = await mkdtemp(join(tmpdir(), 'obdkit-bench-'));
try {
  const disk = new Solver<{ layer: string }>({ stateRoot: state, contentHasher: hasher, concurrency: 4 });
  await time('solve cold, file index (writes every record)', () => disk.solve(conv.graph, conv.target, { executor }));
  const fresh = new Solver<{ layer: string }>({ stateRoot: state, contentHasher: hasher, concurrency: 4 });
  await time('solve warm, file index, new Solver', () => fresh.solve(conv.graph, conv.target, { executor }));
  await time('solve noCache, file index', () => fresh.solve(conv.graph, conv.target, { executor, noCache: true }));
} finally {
  await rm(state, { recursive: true, force: true });
}
