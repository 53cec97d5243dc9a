// frontend.targets and frontend.outline answers, in BuildKit's JSON shapes.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { listTargets, outline, outlineResult, targetsResult } from '../../frontend/subrequests.js';

const fixtures = fileURLToPath(new URL('../../../testdata/dockerfiles/', import.meta.url));
const df = readFileSync(fixtures + 'multistage.Dockerfile', 'utf8');
const loc = (start: number, end = start) => ({ ranges: [{ start: { line: start }, end: { line: end } }] });

describe('frontend.targets', () => {
  test('lists every stage with doc comments, base, platform and the default', () => {
    const l = listTargets(df);
    assert.deepEqual(l.targets, [
      { name: 'base', description: 'holds the toolchain', base: 'golang:${GO_VERSION}-alpine', location: loc(7) },
      { name: 'deps', description: 'downloads modules', base: 'base', location: loc(11) },
      { name: 'build', base: 'deps', location: loc(15) },
      { name: 'docs', base: 'alpine:3.20', location: loc(22) },
      { name: 'release', default: true, description: 'is the shipped image', base: 'gcr.io/distroless/static:nonroot', location: loc(26) },
    ]);
    assert.equal(Buffer.from(l.sources[0]!, 'base64').toString(), df);
  });

  test('result metadata: result.json, result.txt table, version', () => {
    const r = targetsResult(listTargets('FROM a AS one\n# two second stage\nFROM b AS two\n'));
    assert.equal(r.metadata.version, '1.0.0');
    assert.deepEqual(JSON.parse(r.metadata['result.json']!).targets.map((t: { name: string }) => t.name), ['one', 'two']);
    // Go tabwriter layout: every tab-terminated cell is padded, even when the last column is empty.
    assert.equal(r.metadata['result.txt'], 'TARGET        DESCRIPTION\none           \ntwo (default) second stage\n');
  });

  test('an unnamed last stage is "(default)"', () => {
    const r = targetsResult(listTargets('FROM a --platform=x\nFROM --platform=linux/arm64 b\n'.replace('a --platform=x', 'a')));
    assert.deepEqual(JSON.parse(r.metadata['result.json']!).targets[1], { default: true, base: 'b', platform: 'linux/arm64', location: loc(2) });
    assert.match(r.metadata['result.txt']!, /^\(default\)/m);
  });
});

describe('frontend.outline', () => {
  test('args the target reads (global ones only when used), with values and descriptions; secrets', () => {
    const o = outline(df);
    assert.equal(o.name, 'release');
    assert.equal(o.description, 'is the shipped image');
    assert.deepEqual(o.args, [
      { name: 'GO_VERSION', description: 'version of the Go toolchain', value: '1.22', location: loc(3) },
      { name: 'GOOS', description: 'target operating system', value: 'linux', location: loc(17) },
    ]);
    assert.deepEqual(o.secrets, [{ name: 'netrc', required: true, location: loc(18, 20) }]);
    assert.equal(o.ssh, undefined);
  });

  test('build args change the reported values; another target reads other args', () => {
    assert.equal(outline(df, { buildArgs: { GO_VERSION: '1.23' } }).args![0]!.value, '1.23');
    const docs = outline(df, { target: 'docs' });
    assert.equal(docs.name, 'docs');
    assert.equal(docs.args, undefined);
  });

  test('ssh mounts are listed; result.txt renders the tables', () => {
    const o = outline('FROM a\nARG X=1\nRUN --mount=type=ssh,id=gh,required=true git clone\nRUN --mount=type=secret,id=tok a\n');
    assert.deepEqual(o.ssh, [{ name: 'gh', required: true, location: loc(3) }]);
    assert.deepEqual(o.secrets, [{ name: 'tok', location: loc(4) }]);
    const txt = outlineResult(o).metadata['result.txt']!;
    assert.equal(txt, 'BUILD ARG   VALUE   DESCRIPTION\nX           1       \n\nSECRET   REQUIRED\ntok      \n\nSSH   REQUIRED\ngh    true\n\n');
  });
});
