// Conformance with BuildKit's own Dockerfile frontend. The expected files were recorded from BuildKit
// v0.24.0 (buildkitd + buildctl/buildx `--call`) on the fixture Dockerfiles next to them: the exported
// image config with its history, the progress names of the steps, the targets/outline answers and the
// check (lint) results.
// Only the timestamps are left out, and the EXPOSE/HEALTHCHECK history lines, which BuildKit prints as Go
// struct dumps (with pointer addresses), are compared by their first word.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { convertDockerfile } from '../../frontend/convert.js';
import { listTargets, outline } from '../../frontend/subrequests.js';
import { lint } from '../../frontend/lint.js';
import type { HistoryEntry } from '../../src/solver/ops.js';

const fixtures = fileURLToPath(new URL('../../../testdata/dockerfiles/', import.meta.url));
const read = (name: string): string => readFileSync(fixtures + name, 'utf8');

const normHistory = (h: HistoryEntry[]): HistoryEntry[] =>
  h.map((x) => (/^(EXPOSE|HEALTHCHECK) /.test(x.created_by) ? { ...x, created_by: x.created_by.split(' ')[0]! } : x));

describe('conformance with BuildKit v0.24.0', () => {
  test('image config, history and step names of config.Dockerfile', async () => {
    const expected = JSON.parse(read('config.expected.json')) as {
      buildArgs: Record<string, string>;
      config: { history: HistoryEntry[] };
      stepNames: string[];
    };
    const r = await convertDockerfile({
      dockerfile: read('config.Dockerfile'),
      buildArgs: expected.buildArgs,
      buildPlatform: { os: 'linux', architecture: 'amd64' },
    });
    const mine = JSON.parse(JSON.stringify(r.image)) as { history: HistoryEntry[] };
    assert.deepEqual({ ...mine, history: normHistory(mine.history) }, { ...expected.config, history: normHistory(expected.config.history) });
    const names = Object.values(r.graph.vertices).map((v) => v.name).filter((n) => n !== 'scratch');
    assert.deepEqual(names.sort(), [...expected.stepNames].sort());
  });

  test('frontend.targets and frontend.outline of outline.Dockerfile', () => {
    const expected = JSON.parse(read('outline.expected.json')) as { targets: unknown; outline: unknown };
    const df = read('outline.Dockerfile');
    assert.deepEqual(JSON.parse(JSON.stringify(listTargets(df))), expected.targets);
    assert.deepEqual(JSON.parse(JSON.stringify(outline(df))), expected.outline);
  });

  for (const n of [1, 2, 3, 4]) {
    test(`frontend.lint of lint-${n}.Dockerfile`, async () => {
      const expected = JSON.parse(read(`lint-${n}.expected.json`)) as object;
      const r = await lint(read(`lint-${n}.Dockerfile`), { buildPlatform: { os: 'linux', architecture: 'amd64' } });
      assert.deepEqual(JSON.parse(JSON.stringify(r)), expected);
    });
  }
});
