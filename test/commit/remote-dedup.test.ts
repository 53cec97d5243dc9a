// Sealing against lowers that are still in a registry, and the pooled dedup threads. A sealed lower
// blob is pushed to a real registry; a step's writes over it are compared through a RegistryFetcher
// (the worker asks the main thread for ranges), with the same outcome as against the local file and
// only a fraction of the blob fetched. The LSMT identity of a registry blob is read by range, and
// ensureLocalBlob downloads it into the store verified. The pool reuses its threads across calls and
// answers concurrent calls correctly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commitLayer } from '../../src/overlaybd/commit.js';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob, writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { fileSource, uploadBlob } from '../../src/registry/upload.js';
import { ContentStore } from '../../src/store/content-store.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import { uuidFromDigest } from '../../worker/commit/chain-uuid.js';
import { closeDedupWorkers, dedupInWorker, dedupWorkerStats } from '../../worker/commit/dedup-worker.js';
import { sealStep } from '../../worker/commit/seal.js';
import { chainLowers, layerAvailable, remoteCacheDir } from '../../worker/build/chain-lowers.js';
import { ensureLocalBlob, readLayerIdentity } from '../../worker/build/remote-blobs.js';
import type { LowerSpec } from '../../worker/device/lower-source.js';
import { RegistryFetcher } from '../../worker/device/registry-fetcher.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';

const MiB = 1024 * 1024;
const VSIZE = 64 * MiB;
const LOWER_UUID = 'ABCDEF01-2345-6789-ABCD-EF0123456789';
const LOWER_PARENT = '11111111-2222-3333-4444-555555555555';

describe('sealing over registry lowers', () => {
  let reg: RunningRegistry;
  let dir: string;
  let store: ContentStore;
  let client: RegistryClient;
  /** The lower: 8 MiB of random bytes at 0, sealed, zfile+tar. */
  let lower: { digest: string; size: number; path: string; data: Buffer };
  let record: LayerRecord;

  before(async () => {
    reg = await startRegistry();
    dir = mkdtempSync(join(tmpdir(), 'obdkit-remote-dedup-'));
    store = new ContentStore(join(dir, 'root'));
    client = new RegistryClient({ dockerConfig: false });
    const data = randomBytes(8 * MiB);
    const rw = RwLayer.create(join(dir, 'l.data'), join(dir, 'l.index'), { virtualSize: VSIZE });
    rw.write(0, data);
    const path = join(dir, 'lower.blob');
    const r = await writeLayerBlob(commitLayer(rw, { uuid: LOWER_UUID, parentUuid: LOWER_PARENT }), path, { zfile: true, tar: true });
    rw.close();
    lower = { ...r, path, data };
    await uploadBlob(client, parseReference(`${reg.host}/test/lower`), r, await fileSource(path));
    record = { digest: r.digest, size: r.size, uuid: LOWER_UUID, parentUuid: LOWER_PARENT, diffId: r.digest, origin: { repository: `${reg.host}/test/lower` } };
  });

  after(async () => {
    await closeDedupWorkers();
    await client?.close();
    await reg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An upper that rewrites 16 KiB at 4 MiB unchanged and changes the 4 KiB after it. */
  function makeUpper(name: string): { data: string; index: string } {
    const up = RwLayer.create(join(dir, `${name}.data`), join(dir, `${name}.index`), { virtualSize: VSIZE });
    up.write(4 * MiB, lower.data.subarray(4 * MiB, 4 * MiB + 16384));
    up.write(4 * MiB + 16384, Buffer.alloc(4096, 0x5a));
    up.close();
    return { data: join(dir, `${name}.data`), index: join(dir, `${name}.index`) };
  }

  test('chainLowers: a blob in the store is a file, one only in its repository is remote', () => {
    const [remote] = chainLowers(store, [record]);
    assert.deepEqual(remote, {
      kind: 'remote',
      digest: lower.digest,
      size: lower.size,
      dir: remoteCacheDir(store),
      repoBlobUrl: `http://${reg.host}/v2/test/lower/blobs`,
    });
    assert.equal(layerAvailable(store, record), true);
    const { origin: _o, ...noOrigin } = record;
    assert.equal(layerAvailable(store, noOrigin), false);
    assert.throws(() => chainLowers(store, [noOrigin]), /no origin repository/);
  });

  test('reads the LSMT identity of a registry blob by range', async () => {
    const id = await readLayerIdentity(client, parseReference(`${reg.host}/test/lower`), lower.digest, lower.size);
    assert.equal(id.uuid, LOWER_UUID);
    assert.equal(id.parentUuid, LOWER_PARENT);
    assert.ok(id.fetchedBytes > 0 && id.fetchedBytes <= 256 * 1024, `fetched ${id.fetchedBytes} bytes for the header`);
  });

  test('dedup against a remote lower matches the local result and fetches a fraction of the blob', async () => {
    const upper = makeUpper('u1');
    const local = await dedupInWorker(upper, [lower.path]);
    const spec: LowerSpec = { kind: 'remote', digest: lower.digest, size: lower.size, dir: join(dir, 'cache-1'), repoBlobUrl: `http://${reg.host}/v2/test/lower/blobs` };
    const fetcher = new RegistryFetcher([spec], { client });
    try {
      const remote = await dedupInWorker(upper, [spec], { remote: fetcher });
      assert.deepEqual(remote, local);
      assert.equal(remote.stats.identicalBytes, 16384);
      assert.deepEqual(
        remote.mappings.map((m) => [m.offset, m.length]),
        [[(4 * MiB + 16384) / 512, 8]],
      );
      const c = fetcher.counters();
      assert.ok(c.requests > 0);
      assert.ok(c.networkBytes < lower.size / 4, `fetched ${c.networkBytes} of ${lower.size} bytes`);
    } finally {
      await fetcher.close();
    }
  });

  test('sealStep with remote lowers: with the caller\'s fetcher, and with one of its own', async () => {
    const spec = chainLowers(store, [record]);
    const fetcher = new RegistryFetcher(spec, { client });
    try {
      const a = await sealStep({ upper: makeUpper('u2'), lowers: spec, remote: fetcher, uuid: uuidFromDigest('sha256:' + 'e'.repeat(64)), parentUuid: LOWER_UUID, store });
      const b = await sealStep({ upper: makeUpper('u3'), lowers: spec, uuid: uuidFromDigest('sha256:' + 'e'.repeat(64)), parentUuid: LOWER_UUID, store });
      assert.ok(a.layer && b.layer);
      assert.equal(a.layer.digest, b.layer.digest);
      assert.deepEqual(a.stats, b.stats);
      assert.equal(a.stats.identicalBytes, 16384);
      const f = new FileRandomAccess(store.blobPath(a.layer.digest));
      try {
        const sealed = openSealedLayer(unwrapLayerBlob(f).lsmt);
        assert.equal(sealed.parentUuid, LOWER_UUID);
        assert.equal(sealed.records.length, 1);
      } finally {
        f.close();
      }
    } finally {
      await fetcher.close();
    }
    assert.equal(store.hasBlob(lower.digest), false, 'sealing must not download the lower');
  });

  test('ensureLocalBlob downloads a remote layer into the store, verified, once', async () => {
    const s = new ContentStore(join(dir, 'root-ensure'));
    const [p1, p2] = await Promise.all([ensureLocalBlob(s, record, client), ensureLocalBlob(s, record, client)]);
    assert.equal(p1, s.blobPath(lower.digest));
    assert.equal(p2, p1);
    assert.ok(readFileSync(p1).equals(readFileSync(lower.path)));
    // From now on the chain reads the local copy.
    assert.deepEqual(chainLowers(s, [record]), [{ kind: 'file', path: p1 }]);
    const wrong: LayerRecord = { ...record, digest: 'sha256:' + '0'.repeat(64) };
    await assert.rejects(ensureLocalBlob(s, wrong, client));
    assert.equal(s.hasBlob(wrong.digest), false);
  });
});

describe('pooled dedup threads', () => {
  let dir: string;
  let lowerPath: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'obdkit-dedup-pool-'));
    const rw = RwLayer.create(join(dir, 'l.data'), join(dir, 'l.index'), { virtualSize: VSIZE });
    rw.write(0, Buffer.alloc(64 * 1024, 0x11));
    lowerPath = join(dir, 'lower.blob');
    await writeLayerBlob(commitLayer(rw, { uuid: LOWER_UUID }), lowerPath, { zfile: true, tar: true });
    rw.close();
  });

  after(async () => {
    await closeDedupWorkers();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An upper whose first `same` blocks repeat the lower and whose next block differs. */
  function upper(name: string, same: number): { data: string; index: string } {
    const up = RwLayer.create(join(dir, `${name}.data`), join(dir, `${name}.index`), { virtualSize: VSIZE });
    const w = Buffer.alloc((same + 1) * 4096, 0x11);
    w.fill(0x77, same * 4096);
    up.write(0, w);
    up.close();
    return { data: join(dir, `${name}.data`), index: join(dir, `${name}.index`) };
  }

  test('two sequential calls reuse one thread', async () => {
    await closeDedupWorkers();
    const before = dedupWorkerStats().started;
    const a = await dedupInWorker(upper('s1', 2), [lowerPath]);
    const b = await dedupInWorker(upper('s2', 3), [lowerPath]);
    assert.equal(a.stats.identicalBytes, 2 * 4096);
    assert.equal(b.stats.identicalBytes, 3 * 4096);
    const st = dedupWorkerStats();
    assert.equal(st.started - before, 1);
    const [t1, t2] = st.answeredBy.slice(-2);
    assert.equal(t1, t2);
  });

  test('concurrent calls are each answered correctly', async () => {
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => dedupInWorker(upper(`c${n}`, n), [lowerPath])));
    results.forEach((r, i) => {
      const n = i + 1;
      assert.equal(r.stats.identicalBytes, n * 4096);
      assert.deepEqual(
        r.mappings.map((m) => [m.offset, m.length]),
        [[n * 8, 8]],
      );
    });
    assert.ok(dedupWorkerStats().started <= 2, 'the pool stays small');
  });

  test('a failing job is reported and the pool keeps working', async () => {
    await assert.rejects(dedupInWorker({ data: join(dir, 'missing.data'), index: join(dir, 'missing.index') }, [lowerPath]));
    const r = await dedupInWorker(upper('f1', 1), [lowerPath]);
    assert.equal(r.stats.identicalBytes, 4096);
  });

  test('a remote lower without a fetcher is refused', async () => {
    await assert.rejects(
      dedupInWorker(upper('r1', 1), [{ kind: 'remote', digest: 'sha256:' + '1'.repeat(64), size: 1, dir, repoBlobUrl: 'http://127.0.0.1:1/v2/x/blobs' }]),
      /without a fetcher/,
    );
  });
});
