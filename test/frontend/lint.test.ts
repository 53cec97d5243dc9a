// The lint subrequest's result metadata and the subrequest dispatcher (exact rule output is checked
// against BuildKit in conformance.test.ts).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { lint, lintResult } from '../../frontend/lint.js';
import { runSubrequest, SUBREQUESTS } from '../../frontend/subrequests.js';
import { ObdkitError } from '../../src/util/errors.js';

const AMD64 = { os: 'linux', architecture: 'amd64' };

describe('frontend.lint', () => {
  test('a clean Dockerfile: no warnings, status 0', async () => {
    const r = await lint('FROM scratch AS app\nCOPY a /a\nCMD ["/a"]\n', { buildPlatform: AMD64 });
    assert.deepEqual(r.warnings, []);
    assert.equal(r.buildError, undefined);
    const m = lintResult(r).metadata;
    assert.equal(m['result.statuscode'], '0');
    assert.equal(m.version, '1.0.0');
    assert.deepEqual(JSON.parse(m['result.json']!).warnings, []);
  });

  test('warnings make status 1 and are listed in result.txt', async () => {
    const r = await lint('FROM scratch\nCMD run\nCOPY $NOPE /x\n', { buildPlatform: AMD64 });
    assert.deepEqual(r.warnings.map((w) => [w.ruleName, w.location.ranges[0]!.start.line]), [
      ['JSONArgsRecommended', 2],
      ['UndefinedVar', 3],
    ]);
    const m = lintResult(r).metadata;
    assert.equal(m['result.statuscode'], '1');
    assert.match(m['result.txt']!, /WARNING: UndefinedVar - https:\/\/docs.docker.com\/go\/dockerfile\/rule\/undefined-var\/\nUsage of undefined variable '\$NOPE'\nDockerfile:3\n/);
  });

  test('a Dockerfile that does not parse is a build error with its line, not an exception', async () => {
    const r = await lint('FROM scratch\nFROOM x\n');
    assert.deepEqual(r.buildError, { message: 'unknown instruction: FROOM', location: { ranges: [{ start: { line: 2 }, end: { line: 2 } }] } });
    assert.equal(lintResult(r).metadata['result.statuscode'], '1');
  });

  test('variables declared by ARG (even without value) and ENV are not undefined', async () => {
    const r = await lint('FROM scratch\nARG A\nENV B=1\nCOPY $A$B /x\nARG C=$A\n', { buildPlatform: AMD64 });
    assert.deepEqual(r.warnings, []);
  });
});

describe('runSubrequest', () => {
  const df = '# app the application\nFROM scratch AS app\nARG V=1\n';

  test('dispatches every known request id', async () => {
    const targets = await runSubrequest('frontend.targets', df);
    assert.equal(JSON.parse(targets.metadata['result.json']!).targets[0].description, 'the application');
    const outline = await runSubrequest('frontend.outline', df);
    assert.deepEqual(JSON.parse(outline.metadata['result.json']!).args.map((a: { name: string }) => a.name), ['V']);
    const lintRes = await runSubrequest('frontend.lint', df, { buildPlatform: AMD64 });
    assert.equal(lintRes.metadata['result.statuscode'], '0');
    const describeRes = await runSubrequest('frontend.subrequests.describe', df);
    assert.deepEqual(JSON.parse(describeRes.metadata['result.json']!).map((r: { name: string }) => r.name), SUBREQUESTS.map((r) => r.name));
  });

  test('an unknown id fails with "unsupported request <id>"', async () => {
    await assert.rejects(runSubrequest('frontend.convertllb', df), (err: unknown) => {
      assert.ok(err instanceof ObdkitError);
      assert.equal(err.message, 'unsupported request frontend.convertllb');
      return true;
    });
  });
});
