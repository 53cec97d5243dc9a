// The fetch thread that serves remote lower layers (worker/build/fetch-thread.ts), against a real
// registry with token auth: main-thread fetch() calls get the blob's bytes, the credentials come from
// a provider on the main thread, and once they are known a reader whose main thread is blocked in a
// synchronous wait (as a device read under a RUN step's synchronous file calls would be) is still
// answered. Wrong credentials fail the read instead of hanging it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../../src/registry/client.js';
import type { Credentials } from '../../src/registry/credentials.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource, uploadBlob } from '../../src/registry/upload.js';
import { ThreadedRegistryFetcher } from '../../worker/build/fetch-thread.js';
import { ChannelRandomAccess, type RemoteLowerSpec } from '../../worker/device/remote-channel.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';

describe('registry fetch thread', () => {
  let reg: RunningRegistry;
  let dir: string;
  let blob: Buffer;
  let spec: (cache: string) => RemoteLowerSpec;
  const good: Credentials = { username: 'obdkit', password: 'secret' };

  before(async () => {
    reg = await startRegistry({ auth: 'token' });
    dir = mkdtempSync(join(tmpdir(), 'obdkit-fetch-thread-'));
    blob = randomBytes(3 * 1024 * 1024 + 123);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const client = new RegistryClient({ credentials: () => good, dockerConfig: false });
    try {
      await uploadBlob(client, parseReference(`${reg.host}/test/thread`), { digest, size: blob.length }, bufferSource(blob));
    } finally {
      await client.close();
    }
    spec = (cache) => ({ kind: 'remote', digest, size: blob.length, dir: join(dir, cache), repoBlobUrl: `${reg.url}/v2/test/thread/blobs` });
  });

  after(async () => {
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('reads ranges with the main thread\'s credentials, then without the main thread', async () => {
    const asked: string[] = [];
    const f = new ThreadedRegistryFetcher({
      credentials: (host) => {
        asked.push(host);
        return good;
      },
    });
    try {
      const s = spec('cache-1');
      assert.ok((await f.fetch(s, 1000, 5000)).equals(blob.subarray(1000, 6000)));
      assert.deepEqual(asked, [reg.host]);
      // The main thread now blocks (Atomics.wait inside pread) while the fetch thread answers alone.
      const port = f.connect();
      try {
        const ra = new ChannelRandomAccess(port, s, 20_000);
        const far = 2 * 1024 * 1024 + 77;
        assert.ok(ra.pread(far, 4096).equals(blob.subarray(far, far + 4096)));
        assert.ok(ra.pread(blob.length - 100, 4096).equals(blob.subarray(blob.length - 100)));
      } finally {
        port.close();
      }
      const c = await f.counters();
      assert.ok(c.requests >= 3);
      assert.ok(c.networkBytes > 0 && c.networkBytes < blob.length, `fetched ${c.networkBytes} of ${blob.length} bytes`);
    } finally {
      await f.close();
    }
  });

  test('wrong credentials fail the read', async () => {
    const f = new ThreadedRegistryFetcher({ credentials: () => ({ username: 'obdkit', password: 'wrong' }), settings: { fetchTimeoutMs: 10_000 } });
    try {
      await assert.rejects(f.fetch(spec('cache-2'), 0, 4096), /remote read failed/);
    } finally {
      await f.close();
    }
  });
});
