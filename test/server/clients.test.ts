// End-to-end tests of the gRPC API with the real BuildKit clients (buildctl v0.24, docker-buildx v0.28)
// against an in-process server whose backend is ContextFetchBackend, the seam the build pipeline plugs into.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../../src/util/log.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { ContextFetchBackend, FAKE_DIGEST } from './context-fetch-backend.js';
import {
  assertPeerClients,
  BIG_FILE_SIZE,
  buildctlBin,
  buildxBin,
  describeTree,
  makeContextTree,
  run,
  spawnClient,
} from './peer-clients.js';

log.level = 'warn';

let tmp: string;
let ctxDir: string;

async function withServer<T>(backend: ContextFetchBackend, fn: (addr: string, server: RunningServer) => Promise<T>): Promise<T> {
  const server = await startServer({ addresses: ['tcp://127.0.0.1:0'], backend });
  try {
    return await fn(server.addresses[0]!, server);
  } finally {
    await server.close();
  }
}

function buildctlBuild(addr: string, extra: string[] = []): string[] {
  return ['--addr', addr, 'build', '--progress=plain', '--frontend', 'dockerfile.v0', '--local', `context=${ctxDir}`, '--local', `dockerfile=${ctxDir}`, ...extra];
}

before(async () => {
  assertPeerClients();
  tmp = await mkdtemp(join(tmpdir(), 'obdkit-server-'));
  ctxDir = join(tmp, 'ctx');
  await makeContextTree(ctxDir);
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('buildctl against obdkit serve', () => {
  test('debug workers lists one overlaybd worker, native platform first', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-workers') });
    await withServer(backend, async (addr) => {
      const r = await run(buildctlBin, ['--addr', addr, 'debug', 'workers']);
      assert.equal(r.exitCode, 0, r.stderr);
      const rows = r.stdout.trim().split('\n').slice(1);
      assert.equal(rows.length, 1);
      assert.match(rows[0]!, /\slinux\/amd64(,|$)/);
      const v = await run(buildctlBin, ['--addr', addr, 'debug', 'workers', '--verbose']);
      assert.equal(v.exitCode, 0, v.stderr);
      assert.match(v.stdout, /org\.mobyproject\.buildkit\.worker\.executor:\s+oci/);
      assert.match(v.stdout, /org\.mobyproject\.buildkit\.worker\.snapshotter:\s+overlaybd/);
      const info = await run(buildctlBin, ['--addr', addr, 'debug', 'info']);
      assert.equal(info.exitCode, 0, info.stderr);
      assert.match(info.stdout, /BuildKit:/);
    });
  });

  test('build transfers the context exactly, reads the secret, shows progress', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-build'), secretIds: ['x', 'missing'] });
    const secretFile = join(tmp, 'secret.txt');
    await writeFile(secretFile, 'top-secret-value');
    const metaFile = join(tmp, 'meta.json');
    await withServer(backend, async (addr) => {
      const r = await run(
        buildctlBin,
        buildctlBuild(addr, [
          '--secret',
          `id=x,src=${secretFile}`,
          '--metadata-file',
          metaFile,
          '--output',
          'type=image,name=127.0.0.1:5000/demo:1,push=true',
        ]),
      );
      assert.equal(r.exitCode, 0, r.stderr);
      // Plain progress goes to stderr: vertex names, statuses and logs.
      assert.match(r.stderr, /\[internal\] load build definition from Dockerfile/);
      assert.match(r.stderr, /\[internal\] load build context/);
      assert.match(r.stderr, /transferring context: [\d.]+MB [\d.]+s done/);
      assert.match(r.stderr, /pretend-build output line/);
      assert.match(r.stderr, /#3 DONE/);
    });
    assert.equal(backend.builds.length, 1);
    const b = backend.builds[0]!;
    assert.equal(b.aborted, false);
    assert.equal(b.exported, true);
    assert.deepEqual(b.secrets, { x: 'top-secret-value', missing: null });
    assert.deepEqual(b.exporters, [{ type: 'image', attrs: { name: '127.0.0.1:5000/demo:1', push: 'true' } }]);
    assert.equal(b.dockerfile, await readFile(join(ctxDir, 'Dockerfile'), 'utf8'));
    const want = await describeTree(ctxDir, { mtimes: true });
    const got = await describeTree(b.contextDir, { mtimes: true });
    assert.deepEqual(got, want);
    assert.equal(got['big.bin']?.size, BIG_FILE_SIZE);
    assert.equal(got['setuid-tool']?.mode, 0o4755);
    assert.equal(got['link-to-a']?.target, 'sub/a.txt');
    const meta = JSON.parse(await readFile(metaFile, 'utf8')) as Record<string, string>;
    assert.equal(meta['containerimage.digest'], FAKE_DIGEST);
    assert.equal(meta['image.name'], '127.0.0.1:5000/demo:1');
  });

  test('registry credentials and bearer tokens come from the client', async () => {
    // A token endpoint standing in for a registry's: the client (not the daemon) talks to it.
    const seen: { method: string; body: string; authorization: string }[] = [];
    const tokenServer = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', body, authorization: req.headers.authorization ?? '' });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ access_token: 'tok-from-realm', token: 'tok-from-realm', expires_in: 600 }));
      });
    });
    await new Promise<void>((resolve) => tokenServer.listen(0, '127.0.0.1', resolve));
    const port = (tokenServer.address() as AddressInfo).port;
    const dockerConfig = join(tmp, 'docker-config-auth');
    await mkdir(dockerConfig, { recursive: true });
    await writeFile(
      join(dockerConfig, 'config.json'),
      JSON.stringify({ auths: { 'registry.test:5000': { auth: Buffer.from('alice:pa55word').toString('base64') } } }),
    );
    const backend = new ContextFetchBackend({
      workDir: join(tmp, 'w-auth'),
      auth: { host: 'registry.test:5000', realm: `http://127.0.0.1:${port}/token`, service: 'registry.test', scopes: ['repository:demo:pull,push'] },
    });
    try {
      await withServer(backend, async (addr) => {
        const r = await run(buildctlBin, buildctlBuild(addr), { DOCKER_CONFIG: dockerConfig });
        assert.equal(r.exitCode, 0, r.stderr);
      });
    } finally {
      await new Promise((resolve) => tokenServer.close(resolve));
    }
    const b = backend.builds[0]!;
    assert.deepEqual(b.credentials, { username: 'alice', secret: 'pa55word' });
    assert.deepEqual(b.token, { token: 'tok-from-realm', expiresInSeconds: 600 });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.method, 'POST');
    const form = new URLSearchParams(seen[0]!.body);
    assert.equal(form.get('username'), 'alice');
    assert.equal(form.get('password'), 'pa55word');
    assert.equal(form.get('service'), 'registry.test');
    assert.equal(form.get('client_id'), 'buildkit-client');
  });

  test('local and tar outputs come back through FileSend', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-outputs') });
    const outDir = join(tmp, 'out-local');
    const outTar = join(tmp, 'out.tar');
    await withServer(backend, async (addr) => {
      const r = await run(buildctlBin, buildctlBuild(addr, ['--output', `type=local,dest=${outDir}`, '--output', `type=tar,dest=${outTar}`]));
      assert.equal(r.exitCode, 0, r.stderr);
    });
    const want = await describeTree(ctxDir);
    const got = await describeTree(outDir);
    assert.deepEqual(got, want);
    const tar = await readFile(outTar);
    assert.match(tar.subarray(0, 100).toString('latin1'), /^Dockerfile/);
    assert.ok(tar.includes(Buffer.from('hello from the backend')));
  });

  test('a backend error fails the client with its message', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-fail'), failWith: 'step 1/1 exploded on purpose' });
    await withServer(backend, async (addr) => {
      const r = await run(buildctlBin, buildctlBuild(addr));
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /step 1\/1 exploded on purpose/);
      assert.match(r.stderr, /ERROR/);
    });
  });

  test('Ctrl-C in the client cancels the build in the backend', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-sigint'), hang: true });
    await withServer(backend, async (addr) => {
      const child = spawnClient(buildctlBin, buildctlBuild(addr));
      try {
        const rec = await backend.whenHanging();
        child.kill('SIGINT');
        const res = await child;
        assert.notEqual(res.exitCode, 0);
        await waitFor(() => rec.aborted);
        assert.match(rec.abortReason ?? '', /cancel/);
      } finally {
        child.kill('SIGKILL');
        await child;
      }
    });
  });

  test('du and prune answer with empty lists', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-du') });
    await withServer(backend, async (addr) => {
      const du = await run(buildctlBin, ['--addr', addr, 'du']);
      assert.equal(du.exitCode, 0, du.stderr);
      assert.match(du.stdout, /Total:\s+0\s*B/);
      const prune = await run(buildctlBin, ['--addr', addr, 'prune']);
      assert.equal(prune.exitCode, 0, prune.stderr);
    });
  });

  test('killing the client mid-build aborts the backend', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-cancel'), hang: true });
    await withServer(backend, async (addr) => {
      const child = spawnClient(buildctlBin, buildctlBuild(addr));
      try {
        const rec = await backend.whenHanging();
        assert.equal(rec.aborted, false);
        child.kill('SIGKILL');
        await child;
        await waitFor(() => rec.aborted);
        assert.match(rec.abortReason ?? '', /cancel/);
      } finally {
        child.kill('SIGKILL');
        await child;
      }
    });
  });
});

describe('docker buildx (remote driver) against obdkit serve', () => {
  test('create, inspect and build reach the backend through the gateway', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-buildx'), secretIds: ['x'] });
    const dockerConfig = join(tmp, 'docker-config');
    const env = { DOCKER_CONFIG: dockerConfig, BUILDX_NO_DEFAULT_ATTESTATIONS: '1' };
    const secretFile = join(tmp, 'secret-bx.txt');
    await writeFile(secretFile, 'bx-secret');
    await withServer(backend, async (addr) => {
      const c = await run(buildxBin, ['create', '--name', 'obd', '--driver', 'remote', addr], env);
      assert.equal(c.exitCode, 0, c.stderr);
      const i = await run(buildxBin, ['--builder', 'obd', 'inspect'], env);
      assert.equal(i.exitCode, 0, i.stderr);
      assert.match(i.stdout, /Status:\s+running/);
      assert.match(i.stdout, /snapshotter:\s+overlaybd/);
      const b = await run(
        buildxBin,
        [
          '--builder',
          'obd',
          'build',
          '--progress=plain',
          '--secret',
          `id=x,src=${secretFile}`,
          '--output',
          'type=image,name=127.0.0.1:5000/demo:2,push=true',
          ctxDir,
        ],
        env,
      );
      assert.equal(b.exitCode, 0, b.stderr);
      assert.match(b.stderr, /\[internal\] load build context/);
      assert.match(b.stderr, /pretend-build output line/);
    });
    const builds = backend.builds.filter((x) => x.requestId === undefined);
    assert.equal(builds.length, 1);
    const b = builds[0]!;
    assert.equal(b.attrs['filename'], 'Dockerfile');
    assert.equal(b.secrets['x'], 'bx-secret');
    assert.equal(b.exported, true);
    assert.deepEqual(await describeTree(b.contextDir), await describeTree(ctxDir));
  });

  test('--call outline goes to the backend as a frontend.outline subrequest', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-buildx-call') });
    const env = { DOCKER_CONFIG: join(tmp, 'docker-config-call') };
    await withServer(backend, async (addr) => {
      assert.equal((await run(buildxBin, ['create', '--name', 'obdc', '--driver', 'remote', addr], env)).exitCode, 0);
      const b = await run(buildxBin, ['--builder', 'obdc', 'build', '--call', 'outline,format=json', ctxDir], env);
      assert.equal(b.exitCode, 0, b.stderr);
      assert.deepEqual(JSON.parse(b.stdout), { name: '', args: [] });
    });
    assert.deepEqual(
      backend.builds.map((b) => b.requestId),
      ['frontend.outline'],
    );
  });

  test('buildx failure exits non-zero with the backend message', async () => {
    const backend = new ContextFetchBackend({ workDir: join(tmp, 'w-buildx-fail'), failWith: 'no space left on pretend device' });
    const env = { DOCKER_CONFIG: join(tmp, 'docker-config-fail') };
    await withServer(backend, async (addr) => {
      assert.equal((await run(buildxBin, ['create', '--name', 'obdf', '--driver', 'remote', addr], env)).exitCode, 0);
      const b = await run(buildxBin, ['--builder', 'obdf', 'build', '--progress=plain', ctxDir], env);
      assert.equal(b.exitCode, 1);
      assert.match(b.stderr, /no space left on pretend device/);
    });
  });
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), 'condition never became true');
}
