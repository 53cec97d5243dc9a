// RemoteBlob range reads: random offsets against the source bytes, in-flight de-duplication, the
// on-disk chunk cache (cold/warm counters, restart, LRU cap, temp files), worker-thread sync reads,
// and storage redirects (Range kept, Authorization dropped).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource, uploadBlob } from '../../src/registry/upload.js';
import { RemoteBlob } from '../../src/registry/remote-blob.js';
import { ChunkCache } from '../../src/registry/chunk-cache.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { randomBlob } from './fixtures.js';

const MiB = 1 << 20;

describe('RemoteBlob range reads', () => {
  let reg: RunningRegistry;
  let client: RegistryClient;
  let work: string;
  const blob = randomBlob(9 * MiB + 12345);
  const ref = () => parseReference(`${reg.host}/range/blob:1`);
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ dockerConfig: false });
    work = await mkdtemp(join(tmpdir(), 'obdkit-range-'));
    await uploadBlob(client, ref(), { digest: blob.digest, size: blob.data.length }, bufferSource(blob.data));
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('uncached reads at random offsets equal the source; identical in-flight ranges are fetched once', async () => {
    const rb = new RemoteBlob(client, ref(), blob.digest);
    assert.equal(await rb.size(), blob.data.length);
    for (let i = 0; i < 20; i++) {
      const off = randomInt(0, blob.data.length);
      const len = randomInt(1, 300_000);
      const got = await rb.read(off, len);
      assert.ok(got.equals(blob.data.subarray(off, off + len)), `offset ${off} length ${len}`);
    }
    const before = rb.stats.networkRequests;
    const same = await Promise.all([rb.read(1000, 5000), rb.read(1000, 5000), rb.read(1000, 5000)]);
    assert.equal(rb.stats.networkRequests - before, 1);
    for (const s of same) assert.ok(s.equals(blob.data.subarray(1000, 6000)));
    // Reads past the end are clipped.
    const tail = await rb.read(blob.data.length - 10, 100);
    assert.ok(tail.equals(blob.data.subarray(blob.data.length - 10)));
    assert.equal((await rb.read(blob.data.length, 10)).length, 0);
  });

  test('cold then warm cache: counters show network vs served bytes; cache survives a restart', async () => {
    const dir = join(work, 'cache1');
    const offsets = Array.from({ length: 30 }, () => [randomInt(0, blob.data.length), randomInt(1, 3 * MiB)] as const);
    {
      const cache = await ChunkCache.open({ dir, capacityBytes: 64 * MiB });
      const rb = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
      for (const [off, len] of offsets) assert.ok((await rb.read(off, len)).equals(blob.data.subarray(off, off + len)));
      assert.ok(rb.stats.networkBytes > 0);
      // Fetches are whole aligned chunks: never more than the blob itself.
      assert.ok(rb.stats.networkBytes <= blob.data.length);
      const cold = { ...rb.stats };
      for (const [off, len] of offsets) assert.ok((await rb.read(off, len)).equals(blob.data.subarray(off, off + len)));
      assert.equal(rb.stats.networkBytes, cold.networkBytes, 'warm reads use no network');
      assert.equal(rb.stats.servedBytes, 2 * cold.servedBytes);
      assert.ok(rb.stats.cacheHitBytes >= cold.servedBytes);
    }
    {
      // A new cache object over the same directory (as after a restart) serves the same bytes offline.
      const cache = await ChunkCache.open({ dir, capacityBytes: 64 * MiB });
      assert.ok(cache.usedBytes > 0);
      const rb = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
      for (const [off, len] of offsets) assert.ok((await rb.read(off, len)).equals(blob.data.subarray(off, off + len)));
      assert.equal(rb.stats.networkBytes, 0);
    }
  });

  test('concurrent reads of one missing chunk fetch it once', async () => {
    const cache = await ChunkCache.open({ dir: join(work, 'cache2'), capacityBytes: 64 * MiB });
    const rb = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
    // A second RemoteBlob of the same blob on the same cache (another build using the layer) shares the fetch.
    const other = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
    const reads = await Promise.all([rb.read(10, 100), rb.read(5000, 100), rb.read(MiB - 50, 40), rb.ensureCached(0, 10), other.read(20, 30)]);
    assert.equal(rb.stats.networkRequests + other.stats.networkRequests, 1);
    assert.equal(rb.stats.networkBytes + other.stats.networkBytes, MiB);
    assert.ok(reads[0].equals(blob.data.subarray(10, 110)));
  });

  test('the size cap evicts least recently used chunks; partial temp files are never served', async () => {
    const dir = join(work, 'cache3');
    const cache = await ChunkCache.open({ dir, capacityBytes: 3 * MiB, graceMs: 0 });
    const rb = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
    for (let c = 0; c < 6; c++) await rb.read(c * MiB, 10);
    assert.ok(cache.usedBytes <= 3 * MiB, `used ${cache.usedBytes}`);
    assert.ok(!cache.has(blob.digest, 0) && cache.has(blob.digest, 5));
    // A leftover temp file from an interrupted write is removed on open and not counted.
    const blobDir = join(cache.root, (await readdir(cache.root))[0]!);
    await writeFile(join(blobDir, '7.tmp-1-abc'), Buffer.alloc(100));
    const reopened = await ChunkCache.open({ dir, capacityBytes: 3 * MiB, graceMs: 0 });
    assert.ok(!reopened.has(blob.digest, 7));
    assert.ok(!(await readdir(blobDir)).some((n) => n.includes('.tmp-')));
    const rb2 = new RemoteBlob(client, ref(), blob.digest, { cache: reopened, size: blob.data.length });
    assert.ok((await rb2.read(7 * MiB - 5, 10)).equals(blob.data.subarray(7 * MiB - 5, 7 * MiB + 5)));
  });

  test('a worker thread reads bytes synchronously after ensureCached', async () => {
    const cache = await ChunkCache.open({ dir: join(work, 'cache4'), capacityBytes: 64 * MiB });
    const rb = new RemoteBlob(client, ref(), blob.digest, { cache, size: blob.data.length });
    const off = 2 * MiB - 777;
    const len = 2 * MiB + 1000;
    await rb.ensureCached(off, len);
    const moduleUrl = new URL('../../src/registry/chunk-cache.js', import.meta.url).href;
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(workerData.moduleUrl).then((m) => {
        const buf = m.readCachedSync(workerData.layout, workerData.digest, workerData.off, workerData.len);
        const reader = new m.CachedChunkReader(workerData.layout, 2);
        const again = Buffer.concat([0, 1, 2, 3].map((k) => reader.readSync(workerData.digest, workerData.off + k * 4096, 4096)));
        const whole = reader.readSync(workerData.digest, workerData.off, workerData.len);
        reader.close();
        parentPort.postMessage({ buf, again, whole });
      });`;
    const w = new Worker(code, { eval: true, workerData: { moduleUrl, layout: cache.layout, digest: blob.digest, off, len } });
    try {
      const got = await new Promise<{ buf: Uint8Array; again: Uint8Array; whole: Uint8Array }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      assert.ok(Buffer.from(got.buf).equals(blob.data.subarray(off, off + len)));
      assert.ok(Buffer.from(got.again).equals(blob.data.subarray(off, off + 4 * 4096)));
      assert.ok(Buffer.from(got.whole).equals(blob.data.subarray(off, off + len)));
    } finally {
      await w.terminate();
    }
    assert.throws(() => rb.readCachedSync(8 * MiB, 10), /not cached/);
  });
});

describe('RemoteBlob behind a storage redirect', () => {
  let reg: RunningRegistry;
  let proxy: Server;
  let proxyPort: number;
  const seen: { path: string; range?: string; auth?: string; host?: string }[] = [];
  const blob = randomBlob(3 * MiB + 5);
  before(async () => {
    reg = await startRegistry({ auth: 'basic', users: { u: 'p' } });
    // Redirect blob GETs to "storage" on another host name (localhost vs 127.0.0.1) that serves bytes from the registry.
    proxy = createServer((req, res) => {
      const url = req.url ?? '/';
      seen.push({ path: url, range: req.headers.range, auth: req.headers.authorization, host: req.headers.host });
      if (req.method === 'GET' && /\/blobs\/sha256:/.test(url) && !url.startsWith('/storage')) {
        req.resume();
        // Only authenticated clients get the pre-signed location, as a real registry would do.
        if (!req.headers.authorization) {
          res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
          return;
        }
        res.writeHead(307, { location: `http://localhost:${proxyPort}/storage${url}?sig=1` }).end();
        return;
      }
      const upstreamPath = url.startsWith('/storage') ? url.slice('/storage'.length).replace(/\?sig=1$/, '') : url;
      const headers = { ...req.headers, host: reg.host, authorization: `Basic ${Buffer.from('u:p').toString('base64')}` };
      const up = httpRequest({ host: '127.0.0.1', port: reg.port, method: req.method, path: upstreamPath, headers }, (ur) => {
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyPort = (proxy.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((r) => proxy?.close(() => r()));
    await reg?.stop();
  });

  test('Range is kept across the redirect, Authorization is not; the storage URL is reused', async () => {
    const ref = parseReference(`127.0.0.1:${proxyPort}/redir/blob:1`);
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'u', password: 'p' }) });
    try {
      await uploadBlob(client, ref, { digest: blob.digest, size: blob.data.length }, bufferSource(blob.data));
      seen.length = 0;
      const rb = new RemoteBlob(client, ref, blob.digest, { size: blob.data.length });
      assert.ok((await rb.read(100, 1000)).equals(blob.data.subarray(100, 1100)));
      assert.ok((await rb.read(MiB * 2, 1000)).equals(blob.data.subarray(MiB * 2, MiB * 2 + 1000)));
      const storage = seen.filter((s) => s.path.startsWith('/storage'));
      assert.equal(storage.length, 2);
      for (const s of storage) {
        assert.equal(s.auth, undefined, 'no Authorization to the storage host');
        assert.match(s.range ?? '', /^bytes=\d+-\d+$/);
      }
      const viaRegistry = seen.filter((s) => !s.path.startsWith('/storage'));
      assert.ok(viaRegistry.length <= 2, 'second read went straight to storage');
    } finally {
      await client.close();
    }
  });
});
