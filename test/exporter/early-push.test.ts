// Layers pushed while the build runs, and layers of a lazily read base, against a real registry seen
// through a recording proxy: blobs uploaded early are not uploaded again and the manifest still comes
// last; a failed early upload fails the push naming the blob and the registry, with no manifest;
// closing abandons uploads in flight; a layer with an origin is mounted (same registry) or streamed
// (another registry) with no local file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assembleImage, type ImageInput, type LayerBlob } from '../../src/exporter/image.js';
import { EarlyLayerPush } from '../../src/exporter/early-push.js';
import { pushExportImage } from '../../src/exporter/registry-push.js';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { headBlob, headManifest, resolveImage } from '../../src/registry/pull.js';
import { bufferSource, uploadBlob } from '../../src/registry/upload.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy, type LoggedRequest } from '../registry/fault-proxy.js';
import { randomBlob, writeRandomFile } from '../registry/fixtures.js';

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'obdkit-early-push-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

function layerFile(name: string, size: number): LayerBlob {
  const b = randomBlob(size);
  const path = join(work, name);
  writeFileSync(path, b.data);
  return { path, digest: b.digest, size };
}

function imageOf(layers: LayerBlob[]): ReturnType<typeof assembleImage> {
  const input: ImageInput = {
    layers,
    platform: { os: 'linux', architecture: 'amd64' },
    created: '2024-01-02T03:04:05Z',
    config: { Cmd: ['/bin/sh'] },
    history: layers.map((l) => ({ created_by: `layer ${l.digest}` })),
    oci: true,
  };
  return assembleImage(input);
}

const isBlobPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.includes('/blobs/uploads/');
const isManifestPut = (r: LoggedRequest): boolean => r.method === 'PUT' && r.path.includes('/manifests/');
const putOf = (r: LoggedRequest, digest: string): boolean => isBlobPut(r) && decodeURIComponent(r.path).includes(`digest=${digest}`);

describe('early layer push', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.port);
    client = new RegistryClient({ dockerConfig: false, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 } });
  });
  after(async () => {
    await client?.close();
    await proxy?.close();
    await reg?.stop();
  });

  test('layers sent early are waited for, not sent again; config and manifest come after them', async () => {
    const layers = [layerFile('a', 200_000), layerFile('b', 300_000)];
    const names = [`${proxy.host}/early/app:1`, `${proxy.host}/early/app:2`, `${proxy.host}/early/other:1`];
    proxy.log.length = 0;
    const early = new EarlyLayerPush(client, names);
    try {
      for (const l of layers) early.add(l);
      early.add(layers[0]!);
      // Two repositories, two layers: four uploads, whatever the repeats.
      assert.equal(early.started().length, 4);
      const image = imageOf(layers);
      const out = await pushExportImage(image, { client, names, early });
      assert.deepEqual(out.map((o) => o.digest), names.map(() => image.manifestDescriptor.digest));
      assert.deepEqual(out[0]!.blobs.get(layers[0]!.digest), 'uploaded');
      for (const l of layers) {
        // One upload per repository, none of them after any manifest.
        const puts = proxy.log.map((r, i) => (putOf(r, l.digest) ? i : -1)).filter((i) => i >= 0);
        assert.equal(puts.length, 2, JSON.stringify(proxy.log));
        const firstManifest = proxy.log.findIndex(isManifestPut);
        assert.ok(puts.every((i) => i < firstManifest));
      }
      assert.equal((await resolveImage(client, parseReference(names[2]!))).manifestDigest, image.manifestDescriptor.digest);
    } finally {
      await early.close();
    }
  });

  test('a failed early upload fails the push with the blob and the registry; no manifest is written', async () => {
    const layer = layerFile('c', 100_000);
    const name = `${proxy.host}/early/broken:1`;
    proxy.rules = [{ method: 'POST', path: /\/early\/broken\/blobs\/uploads\/$/, action: 'status500', times: Infinity }];
    const early = new EarlyLayerPush(client, [name]);
    try {
      early.add(layer);
      const image = imageOf([layer]);
      await assert.rejects(pushExportImage(image, { client, names: [name], early }), (err: Error) => {
        assert.match(err.message, new RegExp(layer.digest));
        assert.match(err.message, new RegExp(`${proxy.host}/early/broken`));
        return true;
      });
      proxy.rules = [];
      assert.equal(await headManifest(client, parseReference(name)), undefined);
    } finally {
      proxy.rules = [];
      await early.close();
    }
  });

  test('close abandons queued and running uploads and resolves', async () => {
    const big = join(work, 'big');
    const digest = await writeRandomFile(big, 96 << 20);
    const small = [layerFile('d1', 1000), layerFile('d2', 1000), layerFile('d3', 1000)];
    const name = `${proxy.host}/early/cancelled:1`;
    const early = new EarlyLayerPush(client, [name], { concurrency: 1 });
    early.add({ path: big, digest, size: 96 << 20 });
    for (const l of small) early.add(l);
    await early.close();
    // The queued layers never started; nothing was tagged.
    const ref = parseReference(name);
    for (const l of small) assert.equal(await headBlob(client, ref, l.digest), undefined);
    assert.equal(await headManifest(client, ref), undefined);
    await assert.rejects(early.wait(ref, small[0]!.digest)!, /stopped/);
  });
});

describe('layers with an origin (a lazily read base)', () => {
  let a: RunningRegistry;
  let b: RunningRegistry;
  let client: RegistryClient;
  before(async () => {
    a = await startRegistry();
    b = await startRegistry();
    client = new RegistryClient({ dockerConfig: false });
  });
  after(async () => {
    await client?.close();
    await a?.stop();
    await b?.stop();
  });

  test('mounted within a registry, streamed between registries, with no local file', async () => {
    const base = randomBlob(150_000);
    await uploadBlob(client, parseReference(`${a.host}/library/base:1`), { digest: base.digest, size: base.data.length }, bufferSource(base.data));
    const own = layerFile('own', 20_000);
    const lazy: LayerBlob = { path: join(work, 'not-here'), digest: base.digest, size: base.data.length, origin: { repository: `${a.host}/library/base` } };
    const image = imageOf([lazy, own]);
    const same = await pushExportImage(image, { client, names: [`${a.host}/apps/app:1`] });
    assert.equal(same[0]!.blobs.get(base.digest), 'mounted');
    assert.equal(same[0]!.blobs.get(own.digest), 'uploaded');
    const other = await pushExportImage(image, { client, names: [`${b.host}/apps/app:1`] });
    assert.equal(other[0]!.blobs.get(base.digest), 'uploaded');
    const pulled = await resolveImage(client, parseReference(`${b.host}/apps/app:1`));
    assert.equal(pulled.manifestDigest, image.manifestDescriptor.digest);
    assert.equal(await headBlob(client, parseReference(`${b.host}/apps/app:1`), base.digest), base.data.length);
  });
});
