// `obdkit serve` building for real, driven by the real BuildKit clients (buildctl v0.24, docker-buildx
// v0.28) against an in-process server whose backend is the one the `serve` command uses: the busybox
// base image is pushed to a real registry first, then each build runs its steps under runc on FUSE +
// loop devices and pushes an overlaybd image, which the tests pull, mount and check (annotations, files,
// the reference tools' `obd-check` on every layer). Also covered: secrets, a failing RUN, Ctrl-C in the
// client mid-RUN (nothing of the build may be left running or mounted) and two builds at once.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { log } from '../../src/util/log.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { makeBackend, type ObdkitBuildBackend } from '../../src/server/build-backend.js';
import { defaultServeConfig } from '../../src/server/config.js';
import { OverlaybdAnnotation } from '../../src/oci/overlaybd.js';
import { RegistryClient } from '../../src/registry/client.js';
import { resolveImage } from '../../src/registry/pull.js';
import { parseReference } from '../../src/registry/reference.js';
import { obdCheck, oracleDir, repoRoot } from '../helpers/oracle.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { pushBusyboxBase, tempDir, withPulledImage } from '../build/fixtures.js';
import { assertPeerClients, buildctlBin, buildxBin, run, spawnClient } from './peer-clients.js';

log.level = 'warn';

const SECRET = 'e2e-secret-4b7d0a';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['/dev/fuse', '/dev/loop-control', '/bin/busybox']) if (!existsSync(p)) return `needs ${p}`;
  return undefined;
}

const skip = missingPrerequisite();

function writeTree(dir: string, files: Record<string, string>): string {
  for (const [rel, body] of Object.entries(files)) {
    mkdirSync(join(dir, rel, '..'), { recursive: true });
    writeFileSync(join(dir, rel), body);
  }
  return dir;
}

/** Polls `probe` until it returns nothing, then returns its last answer (undefined when all is clean). */
async function settle<T>(probe: () => Promise<T | undefined>, tries = 120): Promise<T | undefined> {
  let last: T | undefined;
  for (let i = 0; i < tries; i++) {
    last = await probe();
    if (last === undefined) return undefined;
    await sleep(500);
  }
  return last;
}

async function manifestDigest(ref: string): Promise<string> {
  const client = new RegistryClient();
  try {
    return (await resolveImage(client, parseReference(ref), { os: 'linux', architecture: 'amd64' })).manifestDigest;
  } finally {
    await client.close();
  }
}

describe('obdkit serve builds with the real clients', { skip }, () => {
  let reg: RunningRegistry;
  let work: ReturnType<typeof tempDir>;
  let base: string;
  let root: string;
  let backend: ObdkitBuildBackend;
  let server: RunningServer;
  let addr: string;

  before(async () => {
    assertPeerClients();
    reg = await startRegistry();
    work = tempDir('obdkit-serve-e2e-');
    root = join(work.path, 'root');
    base = await pushBusyboxBase(reg.host, work.path);
    backend = await makeBackend({ root, addresses: [], config: defaultServeConfig() });
    server = await startServer({ addresses: ['tcp://127.0.0.1:0'], backend });
    addr = server.addresses[0]!;
  });

  after(async () => {
    await server?.close();
    await backend?.close();
    await reg?.stop();
    work?.remove();
  });

  const buildctl = (ctx: string, extra: string[]): string[] => [
    '--addr', addr, 'build', '--progress=plain', '--frontend', 'dockerfile.v0',
    '--local', `context=${ctx}`, '--local', `dockerfile=${ctx}`, '--opt', `build-arg:BASE=${base}`, ...extra,
  ];

  /** Asserts what every pushed image must be: overlaybd layers, each accepted by the reference tools. */
  async function checkPushed(ref: string, pullDir: string, inspect?: (rootfs: string) => void): Promise<void> {
    await withPulledImage(ref, pullDir, async (rootfs, manifest, blobs) => {
      inspect?.(rootfs);
      assert.ok(manifest.layers.length >= 1);
      for (const l of manifest.layers) {
        assert.equal(l.annotations?.[OverlaybdAnnotation.blobDigest], l.digest);
        assert.equal(l.annotations?.[OverlaybdAnnotation.blobSize], String(l.size));
      }
      assert.ok(existsSync(join(oracleDir(), 'obd-check')), `obd-check not found in ${oracleDir()} (set OBDKIT_ORACLE_DIR)`);
      for (const b of blobs) {
        const v = await obdCheck(oracleDir(), b);
        assert.equal(v.result, 'VALID', `${b}: ${v.output}`);
      }
    });
  }

  test('buildctl builds a multi-stage context and pushes an overlaybd image', async () => {
    const ctx = writeTree(join(work.path, 'ctx-multi'), {
      Dockerfile: [
        'ARG BASE',
        'FROM ${BASE} AS builder',
        'RUN mkdir -p /out && echo built-by-builder > /out/artifact',
        'FROM ${BASE}',
        'COPY app/ /srv/app/',
        'COPY --from=builder /out/artifact /srv/artifact',
        'RUN echo "hello from run" && cat /srv/app/hello.txt > /srv/copied.txt',
        '',
      ].join('\n'),
      '.dockerignore': 'app/ignored.txt\n',
      'app/hello.txt': 'hello file\n',
      'app/ignored.txt': 'must not be sent\n',
    });
    const ref = `${reg.host}/e2e/multi:1`;
    const meta = join(work.path, 'multi-meta.json');
    const r = await run(buildctlBin, buildctl(ctx, ['--metadata-file', meta, '--output', `type=image,name=${ref},push=true,registry.insecure=true`]));
    assert.equal(r.exitCode, 0, r.stderr);
    // Each step by name, the RUN output, a layer size line, the overlaybd note.
    assert.match(r.stderr, /\[internal\] load build definition from Dockerfile/);
    assert.match(r.stderr, /\[internal\] load build context/);
    assert.match(r.stderr, /RUN mkdir -p \/out/);
    assert.match(r.stderr, /COPY --from=builder/);
    assert.match(r.stderr, /hello from run/);
    assert.match(r.stderr, /layer sha256:[0-9a-f]{64} [\d.]+[kMG]?B/);
    assert.match(r.stderr, /layers are overlaybd blobs/);
    assert.match(r.stderr, /exporting to image/);
    const m = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>;
    assert.equal(m['containerimage.digest'], await manifestDigest(ref));
    assert.equal(m['image.name'], ref);
    await checkPushed(ref, join(work.path, 'pull-multi'), (rootfs) => {
      assert.equal(readFileSync(join(rootfs, 'srv/copied.txt'), 'utf8'), 'hello file\n');
      assert.equal(readFileSync(join(rootfs, 'srv/artifact'), 'utf8'), 'built-by-builder\n');
      assert.equal(existsSync(join(rootfs, 'srv/app/ignored.txt')), false);
    });

    // Again: every step from the cache, the same manifest.
    const again = await run(buildctlBin, buildctl(ctx, ['--metadata-file', meta, '--output', `type=image,name=${ref},push=true`]));
    assert.equal(again.exitCode, 0, again.stderr);
    assert.match(again.stderr, /CACHED/);
    assert.equal((JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>)['containerimage.digest'], m['containerimage.digest']);
  });

  test('docker-buildx (remote driver) builds with a secret and pushes', async () => {
    const ctx = writeTree(join(work.path, 'ctx-buildx'), {
      Dockerfile: [
        'ARG BASE',
        'FROM ${BASE}',
        `RUN --mount=type=secret,id=token test "$(cat /run/secrets/token)" = "${SECRET}" && echo seen > /secret-was-there`,
        'RUN echo "buildx step output" && echo done > /buildx.txt',
        '',
      ].join('\n'),
    });
    const secretFile = join(work.path, 'token.txt');
    writeFileSync(secretFile, SECRET);
    const env = { DOCKER_CONFIG: join(work.path, 'docker-config-bx'), BUILDX_NO_DEFAULT_ATTESTATIONS: '1' };
    const c = await run(buildxBin, ['create', '--name', 'obde2e', '--driver', 'remote', addr], env);
    assert.equal(c.exitCode, 0, c.stderr);
    const ref = `${reg.host}/e2e/buildx:1`;
    const b = await run(
      buildxBin,
      ['--builder', 'obde2e', 'build', '--progress=plain', '--build-arg', `BASE=${base}`, '--secret', `id=token,src=${secretFile}`,
        '--output', `type=image,name=${ref},push=true,registry.insecure=true,compression=zstd`, ctx],
      env,
    );
    assert.equal(b.exitCode, 0, b.stderr);
    assert.match(b.stderr, /\[internal\] load build definition from Dockerfile/);
    assert.match(b.stderr, /\[internal\] load metadata for /);
    assert.match(b.stderr, /RUN --mount=type=secret,id=token/);
    assert.match(b.stderr, /RUN echo "buildx step output"/);
    assert.match(b.stderr, /#\d+ [\d.]+ buildx step output/);
    assert.match(b.stderr, /exporting to image/);
    assert.match(b.stderr, /layers are overlaybd blobs .*compression=zstd does not apply/);
    const digest = await manifestDigest(ref);
    assert.ok(b.stderr.includes(digest), 'the client shows the pushed digest');
    // A subrequest (`--call`) answers from the Dockerfile without building.
    const call = await run(buildxBin, ['--builder', 'obde2e', 'build', '--call', 'targets,format=json', ctx], env);
    assert.equal(call.exitCode, 0, call.stderr);
    const targets = (JSON.parse(call.stdout) as { targets: { default?: boolean }[] }).targets;
    assert.equal(targets.length, 1);
    assert.equal(targets[0]!.default, true);
    await checkPushed(ref, join(work.path, 'pull-buildx'), (rootfs) => {
      assert.equal(readFileSync(join(rootfs, 'secret-was-there'), 'utf8'), 'seen\n');
      assert.equal(readFileSync(join(rootfs, 'buildx.txt'), 'utf8'), 'done\n');
    });
  });

  test('registry credentials come from the client (basic auth registry)', async () => {
    const secured = await startRegistry({ auth: 'basic', users: { alice: 'pa55word' } });
    try {
      const ctx = writeTree(join(work.path, 'ctx-auth'), { Dockerfile: 'ARG BASE\nFROM ${BASE}\nRUN echo auth > /auth.txt\n' });
      const dockerConfig = join(work.path, 'docker-config-auth');
      writeTree(dockerConfig, {
        'config.json': JSON.stringify({ auths: { [secured.host]: { auth: Buffer.from('alice:pa55word').toString('base64') } } }),
      });
      const ref = `${secured.host}/e2e/auth:1`;
      const denied = await run(buildctlBin, buildctl(ctx, ['--output', `type=image,name=${ref},push=true`]), { DOCKER_CONFIG: join(work.path, 'no-config') });
      assert.notEqual(denied.exitCode, 0, 'pushing without credentials must fail');
      const r = await run(buildctlBin, buildctl(ctx, ['--output', `type=image,name=${ref},push=true`]), { DOCKER_CONFIG: dockerConfig });
      assert.equal(r.exitCode, 0, r.stderr);
    } finally {
      await secured.stop();
    }
  });

  test('local and oci outputs reach the client', async () => {
    const ctx = writeTree(join(work.path, 'ctx-out'), { Dockerfile: 'ARG BASE\nFROM ${BASE}\nRUN echo out > /out.txt\n' });
    const dest = join(work.path, 'out-local');
    const ociFile = join(work.path, 'out.oci.tar');
    const r = await run(buildctlBin, buildctl(ctx, ['--output', `type=local,dest=${dest}`, '--output', `type=oci,dest=${ociFile}`]));
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(readFileSync(join(dest, 'out.txt'), 'utf8'), 'out\n');
    assert.ok(existsSync(join(dest, 'bin/busybox')));
    const list = await execa('tar', ['-tf', ociFile]);
    assert.match(list.stdout, /^index\.json$/m);
    assert.match(list.stdout, /^oci-layout$/m);
    assert.match(list.stdout, /^blobs\/sha256\/[0-9a-f]{64}$/m);
  });

  test('a failing RUN fails the client with the command and its output', async () => {
    const ctx = join(repoRoot, 'testdata/build/failing');
    const r = await run(buildctlBin, buildctl(ctx, []));
    assert.notEqual(r.exitCode, 0);
    assert.match(r.stderr, /exit 3/);
    assert.match(r.stderr, /about to fail/);
    assert.match(r.stderr, /on stderr/);
    assert.match(r.stderr, /exit code: 3/);
  });

  /** runc containers whose bundle lies under this daemon's state root. */
  async function ourContainers(): Promise<string[]> {
    const rl = await execa('runc', ['list', '--format', 'json'], { reject: false });
    const list = (JSON.parse(String(rl.stdout).trim() || 'null') ?? []) as { id: string; bundle: string }[];
    return list.filter((c) => c.bundle.startsWith(root)).map((c) => `${c.id} (${c.bundle})`);
  }

  test('Ctrl-C in the client mid-RUN leaves no container, mount or loop device', async () => {
    const nonce = randomBytes(6).toString('hex');
    const ctx = writeTree(join(work.path, 'ctx-sigint'), {
      // The output line differs from the step's name, so seeing it means the container really runs.
      Dockerfile: `ARG BASE\nFROM \${BASE}\nRUN echo "sleeping-$((40+2))-${nonce}" && sleep 600\n`,
    });
    const child = spawnClient(buildctlBin, buildctl(ctx, []));
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const seen = await settle(async () => (stderr.includes(`sleeping-42-${nonce}`) ? undefined : 'waiting'), 240);
      assert.equal(seen, undefined, `the RUN step never started:\n${stderr}`);
      assert.ok((await ourContainers()).length > 0, 'the RUN container is listed by runc while it runs');
      child.kill('SIGINT');
      const res = await child;
      assert.notEqual(res.exitCode, 0);
    } finally {
      child.kill('SIGKILL');
      await child;
    }
    const left = await settle(async () => {
      const problems: string[] = [];
      for (const c of await ourContainers()) problems.push(`container ${c}`);
      for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) if (line.includes(root)) problems.push(`mount ${line}`);
      const lo = await execa('losetup', ['-a'], { reject: false });
      for (const line of String(lo.stdout).split('\n')) if (line.includes(root)) problems.push(`loop ${line}`);
      return problems.length ? problems : undefined;
    });
    assert.equal(left, undefined, `left behind: ${JSON.stringify(left)}`);
  });

  test('two builds at once both succeed', async () => {
    const nonce = randomBytes(6).toString('hex');
    const shared = `RUN echo "shared-${nonce}" > /shared.txt && sleep 1`;
    const ctxA = writeTree(join(work.path, 'ctx-a'), { Dockerfile: `ARG BASE\nFROM \${BASE}\n${shared}\nRUN echo a > /which.txt\n` });
    const ctxB = writeTree(join(work.path, 'ctx-b'), { Dockerfile: `ARG BASE\nFROM \${BASE}\n${shared}\nRUN echo b > /which.txt\n` });
    const refA = `${reg.host}/e2e/two-a:1`;
    const refB = `${reg.host}/e2e/two-b:1`;
    const [a, b] = await Promise.all([
      run(buildctlBin, buildctl(ctxA, ['--output', `type=image,name=${refA},push=true`])),
      run(buildctlBin, buildctl(ctxB, ['--output', `type=image,name=${refB},push=true`])),
    ]);
    assert.equal(a.exitCode, 0, a.stderr);
    assert.equal(b.exitCode, 0, b.stderr);
    const sharedLayer: string[] = [];
    await withPulledImage(refA, join(work.path, 'pull-a'), async (rootfs, manifest) => {
      assert.equal(readFileSync(join(rootfs, 'which.txt'), 'utf8'), 'a\n');
      assert.equal(readFileSync(join(rootfs, 'shared.txt'), 'utf8'), `shared-${nonce}\n`);
      sharedLayer.push(manifest.layers[1]!.digest);
    });
    await withPulledImage(refB, join(work.path, 'pull-b'), async (rootfs, manifest) => {
      assert.equal(readFileSync(join(rootfs, 'which.txt'), 'utf8'), 'b\n');
      assert.equal(readFileSync(join(rootfs, 'shared.txt'), 'utf8'), `shared-${nonce}\n`);
      sharedLayer.push(manifest.layers[1]!.digest);
    });
    // The identical step ran once for both builds: both images carry the very same layer.
    assert.equal(sharedLayer[0], sharedLayer[1]);
  });
});
