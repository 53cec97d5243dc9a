// Pushing through a fault-injecting proxy: dropped connections and 500s mid-upload end in a verified
// push or a clear failure, and the manifest (the tag) is written only when every blob is present.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource, fileSource, uploadBlob } from '../../src/registry/upload.js';
import { pushImage } from '../../src/registry/push.js';
import { downloadBlob } from '../../src/registry/pull.js';
import { MediaType } from '../../src/oci/media-types.js';
import { overlaybdLayerDescriptor } from '../../src/oci/overlaybd.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { ObdkitError } from '../../src/util/errors.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { randomBlob, writeRandomFile } from './fixtures.js';

const MiB = 1 << 20;

/** Asks the registry directly (not through the proxy) whether a manifest tag exists. */
async function tagExists(reg: RunningRegistry, repo: string, tag: string): Promise<boolean> {
  const r = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: MediaType.ociManifest } });
  return r.status === 200;
}

async function blobExists(reg: RunningRegistry, repo: string, digest: string): Promise<boolean> {
  return (await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: 'HEAD' })).status === 200;
}

describe('pushing through a faulty connection', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let work: string;
  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.port);
    work = await mkdtemp(join(tmpdir(), 'obdkit-faults-'));
  });
  after(async () => {
    await proxy?.close();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function image(layerPath: string, layerSize: number, smallSize: number) {
    const layerDigest = await writeRandomFile(layerPath, layerSize);
    const small = randomBlob(smallSize);
    const layers = [overlaybdLayerDescriptor(layerDigest, layerSize), overlaybdLayerDescriptor(small.digest, smallSize)];
    const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }));
    const configDesc = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDesc, layers }));
    return {
      manifest,
      layers,
      blobs: [
        { descriptor: configDesc, source: bufferSource(config) },
        { descriptor: layers[0]!, source: await fileSource(layerPath) },
        { descriptor: layers[1]!, source: bufferSource(small.data) },
      ],
    };
  }

  test('dropped connections and injected 500s mid-upload: the push completes with verified blobs', async () => {
    const img = await image(join(work, 'layer1'), 40 * MiB + 17, 3 * MiB);
    proxy.rules = [
      { method: 'PATCH', path: /\/blobs\/uploads\//, action: 'drop-mid-body', after: 1 },
      { method: 'PATCH', path: /\/blobs\/uploads\//, action: 'status500', after: 3 },
      { method: 'PUT', path: /\/blobs\/uploads\/.*digest=/, action: 'status500', after: 0 },
      { method: 'PUT', path: /\/blobs\/uploads\/.*digest=/, action: 'drop-response', after: 2 },
      { method: 'PUT', path: /\/manifests\//, action: 'status500' },
    ];
    proxy.log.length = 0;
    const client = new RegistryClient({ dockerConfig: false, retry: { baseDelayMs: 10, maxDelayMs: 50 } });
    try {
      const ref = parseReference(`${proxy.host}/faulty/app:1`);
      const res = await pushImage(client, ref, { manifest: img.manifest, mediaType: MediaType.ociManifest, blobs: img.blobs }, { chunkSize: 8 * MiB, monolithicLimit: 4 * MiB, concurrency: 2 });
      assert.equal(res.digest, sha256Digest(img.manifest));
      const big = res.uploads.get(img.layers[0]!.digest)!;
      assert.ok(big.resumes + big.restarts >= 1, `big layer stats ${JSON.stringify(big)}`);
      // Faults really happened.
      assert.ok(proxy.log.some((l) => l.status === 'dropped'));
      assert.ok(proxy.log.some((l) => l.status === 500));
      // The manifest PUT that succeeded came after a successful HEAD of every blob.
      const putAt = proxy.log.findIndex((l) => l.method === 'PUT' && l.path.includes('/manifests/') && l.status === 201);
      assert.ok(putAt > 0);
      for (const b of img.blobs) {
        const headAt = proxy.log.findIndex((l) => l.method === 'HEAD' && l.path.endsWith(b.descriptor.digest) && l.status === 200);
        assert.ok(headAt >= 0 && headAt < putAt, `blob ${b.descriptor.digest} confirmed before the manifest`);
      }
      // Verify from the registry itself: the big blob's bytes hash to its digest.
      const direct = parseReference(`${reg.host}/faulty/app:1`);
      const out = join(work, 'layer1.out');
      await downloadBlob(client, direct, img.layers[0]!.digest, out, img.layers[0]!.size);
      assert.ok(await tagExists(reg, 'faulty/app', '1'));
    } finally {
      await client.close();
    }
  });

  test('after a 500 mid-upload the upload resumes from the registry status instead of restarting', async () => {
    proxy.rules = [{ method: 'PATCH', path: /\/blobs\/uploads\//, action: 'status500', after: 2 }];
    const client = new RegistryClient({ dockerConfig: false, retry: { baseDelayMs: 5, maxDelayMs: 10 } });
    try {
      const b = randomBlob(6 * MiB);
      const ref = parseReference(`${proxy.host}/faulty/resume:1`);
      const st = await uploadBlob(client, ref, { digest: b.digest, size: b.data.length }, bufferSource(b.data), { chunkSize: MiB, monolithicLimit: 0 });
      assert.deepEqual({ resumes: st.resumes, restarts: st.restarts, bytesSent: st.bytesSent }, { resumes: 1, restarts: 0, bytesSent: 6 * MiB });
      assert.ok(await blobExists(reg, 'faulty/resume', b.digest));
    } finally {
      await client.close();
    }
  });

  test('a blob that can never be uploaded fails the push clearly, and no manifest is pushed', async () => {
    const img = await image(join(work, 'layer2'), 12 * MiB, 1000);
    proxy.rules = [{ method: 'PATCH', path: /\/blobs\/uploads\//, action: 'drop-mid-body', times: Infinity }];
    proxy.log.length = 0;
    const client = new RegistryClient({ dockerConfig: false, retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 } });
    try {
      const ref = parseReference(`${proxy.host}/faulty/broken:1`);
      await assert.rejects(
        pushImage(client, ref, { manifest: img.manifest, mediaType: MediaType.ociManifest, blobs: img.blobs }, { chunkSize: 4 * MiB, monolithicLimit: 2 * MiB }),
        (err: unknown) => {
          assert.ok(err instanceof ObdkitError);
          assert.equal(err.code, 'EREG_UPLOAD');
          assert.match(err.message, new RegExp(img.layers[0]!.digest));
          assert.match(err.message, /faulty\/broken/);
          return true;
        },
      );
      assert.ok(!proxy.log.some((l) => l.method === 'PUT' && l.path.includes('/manifests/')), 'no manifest PUT was attempted');
      assert.equal(await tagExists(reg, 'faulty/broken', '1'), false);
      assert.equal(await blobExists(reg, 'faulty/broken', img.layers[0]!.digest), false);
    } finally {
      await client.close();
    }
  });

  test('a push whose manifest PUT keeps failing leaves the tag untouched', async () => {
    const ref = parseReference(`${proxy.host}/faulty/tagged:1`);
    const client = new RegistryClient({ dockerConfig: false, retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 10 } });
    try {
      proxy.rules = [];
      const first = await image(join(work, 'layer3'), 100, 100);
      const d1 = (await pushImage(client, ref, { manifest: first.manifest, mediaType: MediaType.ociManifest, blobs: first.blobs })).digest;
      const second = await image(join(work, 'layer4'), 100, 100);
      proxy.rules = [{ method: 'PUT', path: /\/manifests\//, action: 'status500', times: Infinity }];
      await assert.rejects(pushImage(client, ref, { manifest: second.manifest, mediaType: MediaType.ociManifest, blobs: second.blobs }), /HTTP 500/);
      const r = await fetch(`${reg.url}/v2/faulty/tagged/manifests/1`, { headers: { accept: MediaType.ociManifest } });
      assert.equal(r.headers.get('docker-content-digest'), d1);
      await r.arrayBuffer();
    } finally {
      await client.close();
    }
  });
});
