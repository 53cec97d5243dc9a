// The frontend's graph run by the solver: the seam between the two, with a recording executor and a
// content hasher over a real directory standing in for the build context.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertDockerfile } from '../../frontend/convert.js';
import { Solver, type Executor } from '../../src/solver/solver.js';
import type { ContentRequest } from '../../src/solver/cache-key.js';

const DOCKERFILE = `FROM alpine:3.20 AS build
COPY main.c /src/
RUN cc -o /out/app /src/main.c

FROM alpine:3.20 AS docs
RUN echo docs > /README

FROM scratch
COPY --from=build /out/app /app
COPY --from=docs /README /
`;

describe('frontend graph through the solver', () => {
  test('first build runs every step, an unchanged rebuild none, an edited source file only what depends on it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'obdkit-ctx-'));
    const state = await mkdtemp(join(tmpdir(), 'obdkit-state-'));
    try {
      await writeFile(join(dir, 'main.c'), 'int main(){return 0;}\n');
      // Hashes the selected files of the context directory (plain paths only, enough for this test).
      const hasher = async (r: ContentRequest): Promise<string> => {
        const h = createHash('sha256');
        for (const p of r.paths ?? []) h.update(p).update(await readFile(join(dir, p)));
        return 'sha256:' + h.digest('hex');
      };
      const calls: string[] = [];
      const executor: Executor<string> = {
        async exec(v) {
          calls.push(v.name);
          return `result of ${v.id}`;
        },
      };
      const graph = await convertDockerfile({
        dockerfile: DOCKERFILE,
        resolveImageConfig: async () => ({ digest: 'sha256:' + '0'.repeat(64), config: {} }),
      });
      const solve = () => new Solver<string>({ stateRoot: state, contentHasher: hasher, concurrency: 2 }).solve(graph.graph, graph.target, { executor });

      await solve();
      assert.deepEqual(calls.filter((n) => /^\[(?!internal)/.test(n)).sort(), [
        '[build 1/3] FROM docker.io/library/alpine:3.20@sha256:' + '0'.repeat(64),
        '[build 2/3] COPY main.c /src/',
        '[build 3/3] RUN cc -o /out/app /src/main.c',
        '[docs 2/2] RUN echo docs > /README',
        '[stage-2 1/2] COPY --from=build /out/app /app',
        '[stage-2 2/2] COPY --from=docs /README /',
      ]);

      calls.length = 0;
      const again = await solve();
      assert.equal(again.cached, true);
      assert.deepEqual(calls, []);

      await writeFile(join(dir, 'main.c'), 'int main(){return 1;}\n');
      calls.length = 0;
      await solve();
      assert.deepEqual(calls, [
        '[internal] load build context',
        '[build 2/3] COPY main.c /src/',
        '[build 3/3] RUN cc -o /out/app /src/main.c',
        '[stage-2 1/2] COPY --from=build /out/app /app',
        '[stage-2 2/2] COPY --from=docs /README /',
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
      await rm(state, { recursive: true, force: true });
    }
  });
});
