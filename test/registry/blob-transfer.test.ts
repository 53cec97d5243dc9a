// Blobs that live in another repository, moved without a local copy, against real registries: a
// cross-repository mount on the same registry (201, nothing uploaded; a mount from a repository
// without the blob falls back), a stream from one registry into another (monolithic, and PATCHes fed
// by ranged GETs), and a read that does not match its descriptor failing instead of storing a blob.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource, mountBlob, uploadBlob } from '../../src/registry/upload.js';
import { getBlobBytes, headBlob } from '../../src/registry/pull.js';
import { transferBlob } from '../../src/registry/blob-transfer.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { randomBlob } from './fixtures.js';

describe('blobs from another repository', () => {
  let a: RunningRegistry;
  let b: RunningRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  before(async () => {
    a = await startRegistry();
    b = await startRegistry();
    // Requests to registry A through a recording proxy, to see which ones were made.
    proxy = await startFaultProxy(a.port);
    client = new RegistryClient({ dockerConfig: false });
  });
  after(async () => {
    await client?.close();
    await proxy?.close();
    await a?.stop();
    await b?.stop();
  });

  test('mountBlob: 201 from a repository that has the blob, false (upload cancelled) from one that does not', async () => {
    const blob = randomBlob(4096);
    const desc = { digest: blob.digest, size: blob.data.length };
    await uploadBlob(client, parseReference(`${a.host}/origin/base:1`), desc, bufferSource(blob.data));
    const target = parseReference(`${a.host}/team/app:1`);
    assert.equal(await mountBlob(client, target, desc, 'origin/base'), true);
    assert.equal(await headBlob(client, target, blob.digest), blob.data.length);
    const other = parseReference(`${a.host}/team/other:1`);
    assert.equal(await mountBlob(client, other, desc, 'nothing/here'), false);
    assert.equal(await headBlob(client, other, blob.digest), undefined);
  });

  test('same registry host: a mount, no bytes uploaded', async () => {
    const blob = randomBlob(100_000);
    const desc = { digest: blob.digest, size: blob.data.length };
    await uploadBlob(client, parseReference(`${proxy.host}/origin/lazy:1`), desc, bufferSource(blob.data));
    proxy.log.length = 0;
    const target = parseReference(`${proxy.host}/team/mounted:1`);
    assert.equal(await transferBlob(client, parseReference(`${proxy.host}/origin/lazy`), target, desc), 'mounted');
    assert.equal(await transferBlob(client, parseReference(`${proxy.host}/origin/lazy`), target, desc), 'exists');
    assert.ok(proxy.log.some((r) => r.method === 'POST' && r.path.includes('mount=') && r.status === 201));
    assert.ok(!proxy.log.some((r) => r.method === 'PUT' || r.method === 'PATCH'), JSON.stringify(proxy.log));
    assert.ok((await getBlobBytes(client, target, { mediaType: 'x', ...desc })).equals(blob.data));
  });

  test('another registry: streamed from the origin into the target, whole and in ranged pieces', async () => {
    for (const [size, monolithicLimit] of [
      [300_000, undefined],
      [(3 << 20) + 12345, 0],
    ] as const) {
      const blob = randomBlob(size);
      const desc = { digest: blob.digest, size };
      const origin = parseReference(`${proxy.host}/origin/remote:1`);
      await uploadBlob(client, origin, desc, bufferSource(blob.data));
      proxy.log.length = 0;
      const target = parseReference(`${b.host}/copied/img:1`);
      const opts = monolithicLimit === undefined ? {} : { monolithicLimit, chunkSize: 1 << 20 };
      assert.equal(await transferBlob(client, origin, target, desc, opts), 'uploaded');
      assert.ok((await getBlobBytes(client, target, { mediaType: 'x', ...desc }, 8 << 20)).equals(blob.data));
      const gets = proxy.log.filter((r) => r.method === 'GET' && r.path.includes('/blobs/sha256:'));
      assert.equal(gets.length, monolithicLimit === undefined ? 1 : 4, JSON.stringify(proxy.log));
    }
  });

  test('a read that does not match the descriptor fails and leaves no blob', async () => {
    const blob = randomBlob(50_000);
    const origin = parseReference(`${a.host}/origin/short:1`);
    await uploadBlob(client, origin, { digest: blob.digest, size: blob.data.length }, bufferSource(blob.data));
    const target = parseReference(`${b.host}/copied/bad:1`);
    // The descriptor claims one byte more than the origin holds.
    await assert.rejects(transferBlob(client, origin, target, { digest: blob.digest, size: blob.data.length + 1 }), /got 50000 bytes, expected 50001|EDIGEST_MISMATCH/);
    assert.equal(await headBlob(client, target, blob.digest), undefined);
  });
});
