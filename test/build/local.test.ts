// The local side of `obdkit build` before anything runs: reading a context directory into a build
// request (Dockerfile, which `.dockerignore` wins, build args, secret files), the --progress check and
// the --output text. Real files in a temporary directory; no devices.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkProgressMode, parseOutputSpec, readLocalBuild } from '../../src/build/index.js';
import { ObdkitError } from '../../src/util/errors.js';
import { tempDir } from './fixtures.js';

const isUsage = (err: unknown): boolean => err instanceof ObdkitError && err.code === 'EUSAGE';

describe('readLocalBuild', () => {
  test('reads the Dockerfile, build args (from the environment for a bare name) and secret files', () => {
    const d = tempDir('obdkit-local-');
    try {
      writeFileSync(join(d.path, 'Dockerfile'), 'FROM scratch\n');
      process.env['OBDKIT_TEST_FROM_ENV'] = 'env value';
      const b = readLocalBuild(d.path, {
        buildArgs: ['A=1', 'B=x=y', 'OBDKIT_TEST_FROM_ENV', 'OBDKIT_TEST_UNSET_ARG'],
        secrets: ['id=token,src=token.txt', 'id=other,source=/abs/file'],
        target: 'final',
        noCache: true,
      });
      delete process.env['OBDKIT_TEST_FROM_ENV'];
      assert.equal(b.contextDir, d.path);
      assert.equal(b.request.dockerfile, 'FROM scratch\n');
      assert.equal(b.request.filename, 'Dockerfile');
      assert.equal(b.request.target, 'final');
      assert.equal(b.request.noCache, true);
      assert.equal(b.request.contextName, 'context');
      assert.deepEqual(b.request.buildArgs, { A: '1', B: 'x=y', OBDKIT_TEST_FROM_ENV: 'env value' });
      assert.deepEqual(b.request.excludes, []);
      assert.deepEqual(b.secretFiles, { token: join(process.cwd(), 'token.txt'), other: '/abs/file' });
    } finally {
      d.remove();
    }
  });

  test('the Dockerfile’s own .dockerignore wins over the context’s', () => {
    const d = tempDir('obdkit-local-');
    try {
      mkdirSync(join(d.path, 'build'));
      writeFileSync(join(d.path, 'build/app.Dockerfile'), 'FROM scratch\n');
      writeFileSync(join(d.path, '.dockerignore'), 'context-rule\n');
      const plain = readLocalBuild(d.path, { file: 'build/app.Dockerfile' });
      assert.equal(plain.request.filename, 'app.Dockerfile');
      assert.deepEqual(plain.request.excludes, ['context-rule']);
      writeFileSync(join(d.path, 'build/app.Dockerfile.dockerignore'), 'own-rule\n*.log\n');
      assert.deepEqual(readLocalBuild(d.path, { file: 'build/app.Dockerfile' }).request.excludes, ['own-rule', '*.log']);
    } finally {
      d.remove();
    }
  });

  test('what cannot be used is a usage error', () => {
    const d = tempDir('obdkit-local-');
    try {
      assert.throws(() => readLocalBuild(join(d.path, 'missing'), {}), isUsage);
      assert.throws(() => readLocalBuild(d.path, {}), isUsage);
      writeFileSync(join(d.path, 'Dockerfile'), 'FROM scratch\n');
      assert.throws(() => readLocalBuild(d.path, { secrets: ['id=token'] }), isUsage);
      assert.throws(() => readLocalBuild(d.path, { platform: 'linux//' }), isUsage);
      assert.deepEqual(readLocalBuild(d.path, { platform: 'linux/arm64' }).request.platform, { os: 'linux', architecture: 'arm64' });
    } finally {
      d.remove();
    }
  });
});

describe('local build flags', () => {
  test('--progress takes plain, tty or auto', () => {
    for (const m of ['plain', 'tty', 'auto']) checkProgressMode(m);
    assert.throws(() => checkProgressMode('fancy'), isUsage);
  });

  test('--output names a docker archive, a registry push and keeps quoted commas', () => {
    assert.deepEqual(parseOutputSpec('type=docker,dest=img.tar'), { type: 'docker', dest: 'img.tar' });
    assert.deepEqual(parseOutputSpec('type=registry,name="r/a:1,r/b:2"'), { type: 'image', names: ['r/a:1', 'r/b:2'], push: true, insecure: false, oci: true });
    assert.deepEqual(parseOutputSpec('name=r/a:1,oci-mediatypes=false'), { type: 'image', names: ['r/a:1'], push: false, insecure: false, oci: false });
    assert.throws(() => parseOutputSpec('type=tar'), isUsage);
    assert.throws(() => parseOutputSpec('type=local,dest'), isUsage);
  });
});
