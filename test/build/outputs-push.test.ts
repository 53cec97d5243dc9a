// `obdkit build --output type=image,push=true` end to end, seen through a recording proxy in front of a
// real registry: layers are uploaded while the build still runs (a later RUN step waits until the
// proxy has seen a layer upload finish, and says so), the manifest is the last request and comes
// after the build; a failing or cancelled build leaves no manifest or tag; pushing the same image
// again only checks blobs and writes the manifest.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { runBuild, type BuildCliOptions } from '../../src/cli/build.js';
import { RegistryClient } from '../../src/registry/client.js';
import { headManifest, resolveImage } from '../../src/registry/pull.js';
import { parseReference } from '../../src/registry/reference.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy, type LoggedRequest } from '../registry/fault-proxy.js';
import { pushBusyboxBase, tempDir } from './fixtures.js';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['/dev/fuse', '/dev/loop-control', '/bin/busybox']) if (!existsSync(p)) return `needs ${p}`;
  return undefined;
}

const isBlobPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.includes('/blobs/uploads/');
const isManifestPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.includes('/manifests/');

describe('obdkit build, push=true', { skip: missingPrerequisite() }, () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let check: Server;
  let checkUrl: string;
  let work: ReturnType<typeof tempDir>;
  let base: string;
  let root: string;
  let client: RegistryClient;
  let onSeen: (() => void) | undefined;

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.port);
    // GET /seen/REPO answers 200 once the proxy has seen a layer upload to repository REPO finish.
    check = createServer((req, res) => {
      const repo = (req.url ?? '').replace(/^\/seen/, '');
      const seen = proxy.log.some((r) => isBlobPut(r) && r.path.startsWith(`/v2${repo}/blobs/`) && r.status === 201);
      if (seen) onSeen?.();
      res.writeHead(seen ? 200 : 404).end();
    });
    await new Promise<void>((r) => check.listen(0, '127.0.0.1', r));
    checkUrl = `http://127.0.0.1:${(check.address() as AddressInfo).port}/seen`;
    work = tempDir('obdkit-outputs-push-');
    root = join(work.path, 'root');
    base = await pushBusyboxBase(reg.host, work.path);
    client = new RegistryClient({ dockerConfig: false });
  });

  after(async () => {
    await client?.close();
    if (check) await new Promise<void>((r) => check.close(() => r()));
    await proxy?.close();
    await reg?.stop();
    work?.remove();
  });

  function context(name: string, dockerfile: string): string {
    const dir = join(work.path, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'Dockerfile'), dockerfile);
    return dir;
  }

  async function build(ctx: string, output: string, lines: string[], onLine?: (s: string) => void, signal?: AbortSignal) {
    const repo = parseReference(output.replace(/^.*name=([^,]+).*$/, '$1')).repository;
    const o: BuildCliOptions = { buildArg: [`BASE=${base}`, `CHECK=${checkUrl}/${repo}`], secret: [], cache: true, progress: 'plain', root, output };
    return runBuild(
      ctx,
      o,
      (s) => {
        lines.push(s);
        onLine?.(s);
        if (process.env.OBDKIT_TEST_VERBOSE) process.stderr.write(s);
      },
      signal,
    );
  }

  const EARLY = [
    'ARG BASE',
    'FROM ${BASE}',
    'ARG CHECK',
    'RUN echo first > /first.txt',
    // Waits (at most a minute) for the first layer to reach the registry while this step runs.
    'RUN --network=host for i in $(seq 1 120); do if wget -q -O /dev/null "$CHECK"; then echo "early upload seen"; exit 0; fi; sleep 0.5; done; echo "early upload not seen"',
    'RUN echo third > /third.txt',
    '',
  ].join('\n');

  test('layers go up while the build runs; the manifest is the last request', async () => {
    const name = `${proxy.host}/early/img:1`;
    proxy.log.length = 0;
    const lines: string[] = [];
    let builtAt = -1;
    const r = await build(context('early', EARLY), `type=image,name=${name},push=true`, lines, (s) => {
      if (/^built \d+ layer\(s\)/.test(s)) builtAt = proxy.log.length;
    });
    assert.ok(r.digest);
    assert.ok(lines.some((l) => l.includes('early upload seen')), lines.join(''));
    assert.ok(builtAt > 0);
    const log = proxy.log;
    const blobPuts = log.map((x, i) => (isBlobPut(x) && x.status === 201 ? i : -1)).filter((i) => i >= 0);
    assert.ok(blobPuts.some((i) => i < builtAt), 'some layer was uploaded before the build ended');
    const manifestPuts = log.map((x, i) => (isManifestPut(x) ? i : -1)).filter((i) => i >= 0);
    assert.equal(manifestPuts.length, 1);
    assert.ok(manifestPuts[0]! >= builtAt);
    assert.ok(blobPuts.every((i) => i < manifestPuts[0]!));
    assert.equal(log.at(-1), log[manifestPuts[0]!]);
    const img = await resolveImage(client, parseReference(name));
    assert.equal(img.manifestDigest, r.digest);
    // Base (converted) + three steps.
    assert.equal(img.manifest.layers.length, 4);
  });

  test('a second push of the same image only checks the blobs', async () => {
    const name = `${proxy.host}/early/img:1`;
    const first = await resolveImage(client, parseReference(name));
    proxy.log.length = 0;
    const r = await build(context('early', EARLY), `type=image,name=${name},push=true`, []);
    assert.equal(r.digest, first.manifestDigest);
    assert.equal(r.ran, 0);
    assert.ok(!proxy.log.some((x) => isBlobPut(x) || x.method === 'PATCH'), JSON.stringify(proxy.log));
    assert.equal(proxy.log.filter(isManifestPut).length, 1);
  });

  test('a failing build pushes no manifest and moves no tag', async () => {
    const name = `${proxy.host}/early/failed:1`;
    proxy.log.length = 0;
    const ctx = context('failing', ['ARG BASE', 'FROM ${BASE}', 'RUN echo made > /made.txt', 'RUN echo failing; exit 3', ''].join('\n'));
    await assert.rejects(build(ctx, `type=image,name=${name},push=true`, []), /exit code: 3|exit 3/);
    assert.ok(!proxy.log.some(isManifestPut), JSON.stringify(proxy.log));
    assert.equal(await headManifest(client, parseReference(name)), undefined);
  });

  test('a build cancelled after a layer went up pushes no manifest', async () => {
    const name = `${proxy.host}/early/cancelled:1`;
    proxy.log.length = 0;
    const ac = new AbortController();
    onSeen = () => ac.abort(new Error('cancelled by the test'));
    try {
      const ctx = context('cancelled', [
        'ARG BASE',
        'FROM ${BASE}',
        'ARG CHECK',
        'RUN echo made > /made.txt',
        // Cancelled from the check server once the first layer is up; sleeps long enough not to finish.
        'RUN --network=host for i in $(seq 1 120); do wget -q -O /dev/null "$CHECK" && break; sleep 0.5; done; sleep 300',
        '',
      ].join('\n'));
      await assert.rejects(build(ctx, `type=image,name=${name},push=true`, [], undefined, ac.signal), /cancelled by the test/);
    } finally {
      onSeen = undefined;
    }
    assert.ok(ac.signal.aborted);
    assert.ok(proxy.log.some((r) => isBlobPut(r) && r.status === 201), 'a layer was uploaded before the cancel');
    assert.ok(!proxy.log.some(isManifestPut), JSON.stringify(proxy.log));
    assert.equal(await headManifest(client, parseReference(name)), undefined);
  });
});
