// The exporter: golden manifest/config fields of an overlaybd image, deterministic bytes, archives
// read back by skopeo (oci-archive and docker-archive), a push to a real registry, and type=local.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, chownSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { assembleImage, type ImageInput, type LayerBlob } from '../../src/exporter/image.js';
import { exposedPorts } from '../../src/exporter/image-config.js';
import { canonicalJson } from '../../src/exporter/canonical-json.js';
import { writeDockerArchive, writeOciArchive } from '../../src/exporter/archive-writers.js';
import { pushExportImage } from '../../src/exporter/registry-push.js';
import { exportLocal } from '../../src/build/local-output.js';
import { writeRootfsTar } from '../../src/exporter/rootfs-tar.js';
import { isOverlaybdManifest } from '../../src/oci/overlaybd.js';
import { parseManifestBytes } from '../../src/oci/types.js';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { resolveImage } from '../../src/registry/pull.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';

const samples = new URL('../../../testdata/overlaybd-samples/', import.meta.url).pathname;

function blob(name: string): LayerBlob {
  const path = join(samples, name);
  const data = readFileSync(path);
  return { path, digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length };
}

let work: string;
let layers: LayerBlob[];
before(() => {
  work = mkdtempSync(join(tmpdir(), 'obdkit-export-'));
  layers = [blob('ext4-layer0.commit.lz4.zfile.tar'), blob('ext4-layer1.commit.lz4.zfile.tar')];
});
after(() => rmSync(work, { recursive: true, force: true }));

const CREATED = '2024-01-02T03:04:05Z';

function input(extra: Partial<ImageInput> = {}): ImageInput {
  return {
    layers,
    platform: { os: 'linux', architecture: 'amd64' },
    created: CREATED,
    config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'APP=1'],
      Entrypoint: ['/bin/app'],
      Cmd: ['--serve'],
      User: 'app:app',
      WorkingDir: '/srv',
      Labels: { 'org.example.b': '2', 'org.example.a': '1' },
      ExposedPorts: exposedPorts(['80', '53/udp']),
      Volumes: { '/data': {} },
      StopSignal: 'SIGTERM',
      Healthcheck: { Test: ['CMD-SHELL', 'true'], Interval: 30e9, Retries: 3 },
      Shell: ['/bin/bash', '-c'],
      OnBuild: ['RUN echo child'],
    },
    history: [
      { created: CREATED, created_by: 'COPY . / # buildkit', comment: 'buildkit.dockerfile.v0' },
      { created: CREATED, created_by: 'ENV APP=1', comment: 'buildkit.dockerfile.v0', empty_layer: true },
      { created: CREATED, created_by: 'RUN /bin/sh -c make', comment: 'buildkit.dockerfile.v0' },
    ],
    ...extra,
  };
}

describe('manifest and config', () => {
  test('docker media types, overlaybd annotations, diff_ids, history and runtime config', () => {
    const img = assembleImage(input());
    const m = JSON.parse(img.manifest.toString()) as {
      schemaVersion: number;
      mediaType: string;
      config: { mediaType: string; digest: string; size: number };
      layers: Array<{ mediaType: string; digest: string; size: number; annotations: Record<string, string> }>;
    };
    assert.equal(m.schemaVersion, 2);
    assert.equal(m.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(m.config.mediaType, 'application/vnd.docker.container.image.v1+json');
    assert.equal(m.config.digest, `sha256:${createHash('sha256').update(img.config).digest('hex')}`);
    assert.equal(m.layers.length, 2);
    for (const [i, l] of m.layers.entries()) {
      assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar');
      assert.equal(l.digest, layers[i]!.digest);
      assert.equal(l.size, layers[i]!.size);
      assert.deepEqual(l.annotations, {
        'containerd.io/snapshot/overlaybd/blob-digest': layers[i]!.digest,
        'containerd.io/snapshot/overlaybd/blob-size': String(layers[i]!.size),
        'containerd.io/snapshot/overlaybd/version': '0.1.0',
      });
    }
    const parsed = parseManifestBytes(img.manifest, 'test');
    assert.ok(parsed.kind === 'manifest' && isOverlaybdManifest(parsed.manifest));

    const c = JSON.parse(img.config.toString()) as Record<string, unknown>;
    assert.equal(c['architecture'], 'amd64');
    assert.equal(c['os'], 'linux');
    assert.equal(c['created'], CREATED);
    assert.deepEqual(c['rootfs'], { type: 'layers', diff_ids: layers.map((l) => l.digest) });
    assert.deepEqual((c['history'] as Array<Record<string, unknown>>).map((h) => h['empty_layer'] ?? false), [false, true, false]);
    assert.deepEqual(c['config'], {
      Cmd: ['--serve'],
      Entrypoint: ['/bin/app'],
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'APP=1'],
      ExposedPorts: { '53/udp': {}, '80/tcp': {} },
      Healthcheck: { Interval: 30000000000, Retries: 3, Test: ['CMD-SHELL', 'true'] },
      Labels: { 'org.example.a': '1', 'org.example.b': '2' },
      OnBuild: ['RUN echo child'],
      Shell: ['/bin/bash', '-c'],
      StopSignal: 'SIGTERM',
      User: 'app:app',
      Volumes: { '/data': {} },
      WorkingDir: '/srv',
    });
  });

  test('oci-mediatypes switches every media type', () => {
    const img = assembleImage(input({ oci: true, annotations: { 'org.opencontainers.image.title': 't' } }));
    const m = JSON.parse(img.manifest.toString()) as { mediaType: string; config: { mediaType: string }; layers: Array<{ mediaType: string }>; annotations: Record<string, string> };
    assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(m.config.mediaType, 'application/vnd.oci.image.config.v1+json');
    assert.deepEqual(m.layers.map((l) => l.mediaType), ['application/vnd.oci.image.layer.v1.tar', 'application/vnd.oci.image.layer.v1.tar']);
    assert.deepEqual(m.annotations, { 'org.opencontainers.image.title': 't' });
  });

  test('bytes are deterministic and canonical (sorted keys, no whitespace)', () => {
    const a = assembleImage(input());
    const b = assembleImage(input({ config: { ...input().config, Labels: { 'org.example.a': '1', 'org.example.b': '2' } } }));
    assert.deepEqual(a.manifest, b.manifest);
    assert.deepEqual(a.config, b.config);
    assert.equal(a.config.toString(), canonicalJson(JSON.parse(a.config.toString())));
    assert.ok(!a.manifest.toString().includes(' '));
  });

  test('a base config keeps unknown fields and drops the old build container', () => {
    const img = assembleImage(input({ baseConfig: { 'moby.buildkit.buildinfo.v1': 'x', container_config: { Cmd: ['old'] }, variant: 'v8' } }));
    const c = JSON.parse(img.config.toString()) as Record<string, unknown>;
    assert.equal(c['moby.buildkit.buildinfo.v1'], 'x');
    assert.equal(c['container_config'], undefined);
    assert.equal(c['variant'], undefined);
  });

  test('history must match the layers', () => {
    assert.throws(() => assembleImage(input({ history: [{ created_by: 'only one' }] })), { code: 'EEXPORT' });
  });
});

async function skopeoInspect(target: string): Promise<Record<string, unknown>> {
  const r = await execa('skopeo', ['inspect', target]);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('archives', () => {
  test('type=oci: an OCI layout tar that skopeo reads', async () => {
    const img = assembleImage(input({ oci: true }));
    const dest = join(work, 'image-oci.tar');
    await writeOciArchive(img, dest, { names: ['docker.io/library/app:1'] });
    const info = await skopeoInspect(`oci-archive:${dest}`);
    assert.equal(info['Digest'], img.manifestDescriptor.digest);
    assert.deepEqual(info['Layers'], layers.map((l) => l.digest));
    assert.equal(info['Architecture'], 'amd64');
    assert.deepEqual(info['Labels'], { 'org.example.a': '1', 'org.example.b': '2' });
    const raw = await execa('skopeo', ['inspect', '--raw', `oci-archive:${dest}:1`]);
    assert.equal(raw.stdout, img.manifest.toString());
    const names = (await execa('tar', ['-tf', dest])).stdout.split('\n');
    assert.deepEqual(names.slice(0, 1), ['oci-layout']);
    assert.ok(names.includes('index.json'));
    assert.ok(names.includes(`blobs/sha256/${layers[0]!.digest.slice(7)}`));
    // Same image, same archive bytes.
    const again = join(work, 'image-oci-2.tar');
    await writeOciArchive(img, again, { names: ['docker.io/library/app:1'] });
    assert.deepEqual(readFileSync(again), readFileSync(dest));
  });

  test('type=tar: a docker archive that skopeo reads', async () => {
    const img = assembleImage(input());
    const dest = join(work, 'image-docker.tar');
    await writeDockerArchive(img, dest, { names: ['docker.io/library/app:1'] });
    const info = await skopeoInspect(`docker-archive:${dest}`);
    assert.deepEqual(info['Layers'], layers.map((l) => l.digest));
    assert.equal(info['Os'], 'linux');
    assert.deepEqual(info['Env'], ['PATH=/usr/local/bin:/usr/bin:/bin', 'APP=1']);
    const mj = JSON.parse((await execa('tar', ['-xOf', dest, 'manifest.json'])).stdout) as Array<{ RepoTags: string[]; Config: string }>;
    assert.deepEqual(mj[0]!.RepoTags, ['app:1']);
    assert.equal(mj[0]!.Config, `blobs/sha256/${img.configDescriptor.digest.slice(7)}`);
  });

  test('a layer file that does not match its digest aborts and leaves no file', async () => {
    const bad = join(work, 'bad-layer');
    const good = layers[0]!;
    copyFileSync(good.path, bad);
    const data = readFileSync(bad);
    data[1000] = data[1000]! ^ 0xff;
    writeFileSync(bad, data);
    const img = assembleImage(input({ layers: [{ ...good, path: bad }, layers[1]!] }));
    const dest = join(work, 'bad.tar');
    await assert.rejects(writeOciArchive(img, dest), { code: 'EEXPORT' });
    assert.equal(existsSync(dest), false);
    assert.deepEqual(readdirSync(work).filter((n) => n.startsWith('bad.tar')), []);
  });
});

describe('type=image,push=true', () => {
  let reg: RunningRegistry;
  let client: RegistryClient;
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ dockerConfig: false });
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
  });

  test('pushes blobs then the manifest under every name', async () => {
    const img = assembleImage(input({ oci: true }));
    const names = [`${reg.host}/team/app:1`, `${reg.host}/team/app:latest`];
    const out = await pushExportImage(img, { client, names });
    assert.deepEqual(out.map((o) => o.digest), [img.manifestDescriptor.digest, img.manifestDescriptor.digest]);
    const resolved = await resolveImage(client, parseReference(names[0]!));
    assert.equal(resolved.manifestDigest, img.manifestDescriptor.digest);
    assert.deepEqual(resolved.manifestBytes, img.manifest);
    assert.ok(isOverlaybdManifest(resolved.manifest));
    const info = JSON.parse((await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${names[1]}`])).stdout) as Record<string, unknown>;
    assert.deepEqual(info['Layers'], layers.map((l) => l.digest));
  });
});

describe('type=tar (rootfs tarball)', () => {
  test('the tree as a tar that GNU tar extracts identically', async () => {
    const src = join(work, 'tree-for-tar');
    const long = 'd'.repeat(60) + '/' + 'e'.repeat(60);
    mkdirSync(join(src, 'usr/bin', long), { recursive: true });
    writeFileSync(join(src, 'usr/bin/tool'), 'tool-body', { mode: 0o4755 });
    writeFileSync(join(src, 'usr/bin', long, 'deep-file-with-a-long-name.txt'), 'deep');
    linkSync(join(src, 'usr/bin/tool'), join(src, 'usr/bin/tool-hardlink'));
    symlinkSync('usr/bin', join(src, 'bin'));
    chownSync(join(src, 'usr/bin/tool'), 1000, 1001);
    chmodSync(join(src, 'usr/bin/tool'), 0o4755); // chown cleared the setuid bit
    const dest = join(work, 'rootfs.tar');
    await writeRootfsTar(src, dest);
    const out = join(work, 'rootfs-extracted');
    mkdirSync(out);
    await execa('tar', ['--numeric-owner', '-xpf', dest, '-C', out]);
    assert.equal(readFileSync(join(out, 'usr/bin', long, 'deep-file-with-a-long-name.txt'), 'utf8'), 'deep');
    const st = lstatSync(join(out, 'usr/bin/tool'));
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid], [0o4755, 1000, 1001]);
    assert.equal(lstatSync(join(out, 'usr/bin/tool-hardlink')).ino, st.ino);
    assert.equal(readlinkSync(join(out, 'bin')), 'usr/bin');
  });
});

describe('type=local', () => {
  test('copies the rootfs tree out with links, modes and owners', async () => {
    const src = join(work, 'rootfs');
    mkdirSync(join(src, 'usr/bin'), { recursive: true });
    writeFileSync(join(src, 'usr/bin/tool'), 'tool', { mode: 0o755 });
    symlinkSync('usr/bin', join(src, 'bin'));
    symlinkSync('/etc/shadow', join(src, 'abs-link'));
    chownSync(join(src, 'usr/bin/tool'), 1000, 1000);
    const dest = join(work, 'out-local');
    await exportLocal(src, dest);
    assert.equal(readFileSync(join(dest, 'usr/bin/tool'), 'utf8'), 'tool');
    const st = lstatSync(join(dest, 'usr/bin/tool'));
    assert.deepEqual([st.mode & 0o7777, st.uid], [0o755, 1000]);
    assert.equal(readlinkSync(join(dest, 'bin')), 'usr/bin');
    assert.equal(readlinkSync(join(dest, 'abs-link')), '/etc/shadow');
  });
});
