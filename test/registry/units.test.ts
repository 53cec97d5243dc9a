// Pure-function tests: references, challenges, docker config credentials, OCI documents, platforms.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatReference, isLoopbackHost, parseReference } from '../../src/registry/reference.js';
import { parseWwwAuthenticate } from '../../src/registry/auth.js';
import { dockerConfigProvider } from '../../src/registry/credentials.js';
import { RegistryClient } from '../../src/registry/client.js';
import { backoffDelay } from '../../src/registry/retry.js';
import { parseImageConfig, parseManifestBytes } from '../../src/oci/types.js';
import { isOverlaybdManifest, overlaybdLayerDescriptor, OverlaybdAnnotation } from '../../src/oci/overlaybd.js';
import { parsePlatform, selectManifest } from '../../src/oci/platform.js';
import { MediaType } from '../../src/oci/media-types.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { ObdkitError } from '../../src/util/errors.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('image references', () => {
  test('Docker Hub defaults', () => {
    const r = parseReference('ubuntu');
    assert.equal(r.registry, 'docker.io');
    assert.equal(r.host, 'registry-1.docker.io');
    assert.equal(r.repository, 'library/ubuntu');
    assert.equal(r.tag, 'latest');
    assert.equal(parseReference('docker.io/ubuntu:22.04').repository, 'library/ubuntu');
    assert.equal(parseReference('index.docker.io/foo/bar').host, 'registry-1.docker.io');
    assert.equal(parseReference('foo/bar:1').repository, 'foo/bar');
  });
  test('hosts, ports, tags and digests', () => {
    const r = parseReference(`127.0.0.1:5000/a/b/c:v1.2@${D}`);
    assert.deepEqual([r.host, r.repository, r.tag, r.digest], ['127.0.0.1:5000', 'a/b/c', 'v1.2', D]);
    const l = parseReference('localhost/x');
    assert.equal(l.host, 'localhost');
    assert.equal(parseReference(`[::1]:5000/x@${D}`).tag, undefined);
    assert.equal(formatReference(parseReference('ghcr.io/o/r:t')), 'ghcr.io/o/r:t');
  });
  test('clear errors', () => {
    for (const bad of ['', 'UPPER/case', 'http://host/x', 'host:5000/x:bad tag', 'x@sha256:123', 'a//b', 'host:5000/']) {
      assert.throws(() => parseReference(bad), (e: unknown) => e instanceof ObdkitError && e.code === 'EREFERENCE' && /invalid image reference/.test(e.message), bad);
    }
  });
  test('loopback hosts default to plain http', () => {
    for (const h of ['localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000', 'localhost']) assert.ok(isLoopbackHost(h), h);
    for (const h of ['example.com', '10.0.0.1:5000', '128.0.0.1']) assert.ok(!isLoopbackHost(h), h);
    const c = new RegistryClient({ dockerConfig: false, hosts: { 'reg.local:5000': { insecure: true }, '127.0.0.1:6000': { insecure: false } } });
    assert.equal(c.scheme('127.0.0.1:5000'), 'http');
    assert.equal(c.scheme('reg.local:5000'), 'http');
    assert.equal(c.scheme('127.0.0.1:6000'), 'https');
    assert.equal(c.scheme('ghcr.io'), 'https');
  });
});

describe('auth helpers', () => {
  test('WWW-Authenticate parsing', () => {
    const [b] = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push",error="insufficient_scope"');
    assert.equal(b!.scheme, 'bearer');
    assert.equal(b!.params.realm, 'https://auth.docker.io/token');
    assert.equal(b!.params.scope, 'repository:library/ubuntu:pull,push');
    const two = parseWwwAuthenticate('Basic realm="a \\"q\\"", Bearer realm=x,service=y');
    assert.deepEqual(two.map((c) => c.scheme), ['basic', 'bearer']);
    assert.equal(two[0]!.params.realm, 'a "q"');
    assert.equal(two[1]!.params.service, 'y');
  });
  test('docker config.json credentials', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'obdkit-cfg-'));
    try {
      const p = join(dir, 'config.json');
      await writeFile(
        p,
        JSON.stringify({
          auths: {
            'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw:with:colons').toString('base64') },
            'reg.example.com:5000': { auth: Buffer.from('me:x').toString('base64') },
            'https://other.example.com': { username: 'u2', password: 'p2' },
          },
        }),
      );
      const prov = dockerConfigProvider(p);
      assert.deepEqual(await prov('registry-1.docker.io'), { username: 'hub', password: 'pw:with:colons' });
      assert.deepEqual(await prov('reg.example.com:5000'), { username: 'me', password: 'x' });
      assert.deepEqual(await prov('other.example.com'), { username: 'u2', password: 'p2' });
      assert.equal(await prov('nowhere.example.com'), undefined);
      assert.equal(await dockerConfigProvider(join(dir, 'missing.json'))('x'), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  test('backoff grows and is capped', () => {
    const policy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 400 };
    for (let i = 0; i < 50; i++) {
      assert.ok(backoffDelay(1, policy) <= 100);
      assert.ok(backoffDelay(10, policy) <= 400);
    }
  });
});

describe('OCI documents', () => {
  const layer = overlaybdLayerDescriptor(D, 1234);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: D, size: 10 },
    layers: [layer],
  };
  test('manifests parse and overlaybd layers are recognised', () => {
    const p = parseManifestBytes(Buffer.from(JSON.stringify(manifest)), 'test');
    assert.equal(p.kind, 'manifest');
    if (p.kind !== 'manifest') return;
    assert.ok(isOverlaybdManifest(p.manifest));
    assert.equal(p.manifest.layers[0]!.annotations![OverlaybdAnnotation.blobSize], '1234');
    assert.equal(p.manifest.layers[0]!.annotations![OverlaybdAnnotation.version], '0.1.0');
    const plain = { ...manifest, layers: [{ mediaType: MediaType.ociLayerGzip, digest: D, size: 5 }] };
    const q = parseManifestBytes(Buffer.from(JSON.stringify(plain)), 'test');
    assert.ok(q.kind === 'manifest' && !isOverlaybdManifest(q.manifest));
    // A blob-size annotation that disagrees with the descriptor is not overlaybd.
    const wrong = { ...manifest, layers: [{ ...layer, annotations: { ...layer.annotations, [OverlaybdAnnotation.blobSize]: '99' } }] };
    const w = parseManifestBytes(Buffer.from(JSON.stringify(wrong)), 'test');
    assert.ok(w.kind === 'manifest' && !isOverlaybdManifest(w.manifest));
  });
  test('media type from Content-Type or shape; docker schema 2', () => {
    const { mediaType: _m, ...noType } = manifest;
    const p = parseManifestBytes(Buffer.from(JSON.stringify(noType)), 'x', `${MediaType.dockerManifest}; charset=utf-8`);
    assert.equal(p.mediaType, MediaType.dockerManifest);
    const idx = parseManifestBytes(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [] })), 'x');
    assert.equal(idx.kind, 'index');
  });
  test('validation errors name the source and JSON path', () => {
    const bad = { ...manifest, layers: [{ mediaType: 'x', digest: 'sha256:zz', size: 1 }] };
    assert.throws(() => parseManifestBytes(Buffer.from(JSON.stringify(bad)), 'reg/x:1'), /reg\/x:1.*invalid digest.*\$\.layers\[0\]\.digest/);
    assert.throws(() => parseManifestBytes(Buffer.from('{"schemaVersion":1,"layers":[]}'), 'r'), /schemaVersion 1/);
    assert.throws(() => parseManifestBytes(Buffer.from('not json'), 'r'), /not valid JSON/);
    assert.throws(() => parseImageConfig(Buffer.from('{"rootfs":{"type":3}}'), 'cfg'), /expected a string.*rootfs\.type/);
  });
  test('platform selection defaults to linux/amd64', () => {
    const idx = {
      schemaVersion: 2 as const,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: sha256Digest('arm'), size: 1, platform: { os: 'linux', architecture: 'arm64' } },
        { mediaType: MediaType.ociManifest, digest: sha256Digest('amd'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    };
    assert.equal(selectManifest(idx).digest, sha256Digest('amd'));
    assert.equal(selectManifest(idx, parsePlatform('linux/arm64/v8')).digest, sha256Digest('arm'));
    assert.throws(() => selectManifest(idx, parsePlatform('linux/s390x')), /no manifest for platform linux\/s390x \(index has: linux\/arm64, linux\/amd64\)/);
  });
});
