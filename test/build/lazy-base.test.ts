// FROM an overlaybd image stacks its layers lazily: an image built and pushed by obdkit (a busybox base
// plus 32 MiB of random bytes) is the base of a fresh state root. Its layer records are made without
// downloading a blob; a step device over them reads one small file and writes another; the step is
// sealed against the remote lowers. The base blobs never enter the content store; the registry sees
// range requests for a small fraction of their bytes (the service's RegistryFetcher counters); the new
// layer chains to the base's LSMT uuid and passes the reference tools' `obd-check`; a device over the
// resulting chain shows the written file. The same through a whole build (runBuild, a RUN step) is
// the last test.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { runBuild as cliBuild } from '../../src/cli/build.js';
import { BuildService } from '../../src/build/service.js';
import { runBuild } from '../../src/build/run-build.js';
import { defaultPlatform } from '../../src/oci/platform.js';
import { ContentStore } from '../../src/store/content-store.js';
import { LocalDirContexts } from '../../worker/build/providers.js';
import { chainLowers } from '../../worker/build/chain-lowers.js';
import { imageLayers } from '../../worker/build/image-source.js';
import { stepLayerUuid } from '../../worker/commit/chain-uuid.js';
import { closeDedupWorkers } from '../../worker/commit/dedup-worker.js';
import { sealStep } from '../../worker/commit/seal.js';
import { obdCheck, requireOracle } from '../helpers/oracle.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { pushBusyboxBase, tempDir } from './fixtures.js';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['/dev/fuse', '/dev/loop-control', '/bin/busybox']) if (!existsSync(p)) return `needs ${p}`;
  return undefined;
}

describe('FROM an overlaybd image', { skip: missingPrerequisite() }, () => {
  let reg: RunningRegistry;
  let work: ReturnType<typeof tempDir>;
  let baseRef: string;

  before(async () => {
    reg = await startRegistry();
    work = tempDir('obdkit-lazy-base-');
    const busybox = await pushBusyboxBase(reg.host, work.path);
    const ctx = join(work.path, 'base-ctx');
    mkdirSync(ctx, { recursive: true });
    writeFileSync(
      join(ctx, 'Dockerfile'),
      'ARG BASE\nFROM ${BASE}\nRUN head -c 33554432 /dev/urandom > /big.bin && echo "small and read" > /small.txt\n',
    );
    baseRef = `${reg.host}/test/lazy-base:1`;
    const out = await cliBuild(
      ctx,
      { buildArg: [`BASE=${busybox}`], secret: [], cache: true, progress: 'plain', root: join(work.path, 'root-base'), output: `type=image,name=${baseRef},push=true` },
      (s) => void (process.env.OBDKIT_TEST_VERBOSE && process.stderr.write(s)),
    );
    assert.ok(out.digest);
  });

  after(async () => {
    await closeDedupWorkers();
    await reg?.stop();
    work?.remove();
  });

  test('a step device over its layers fetches a small fraction of the base and downloads no blob', async (t) => {
    const service = await BuildService.open({ root: join(work.path, 'root-step'), maxParallelism: 1 });
    const client = service.registryClient();
    const store = service.store;
    try {
      const layers = await imageLayers(baseRef, defaultPlatform, { store, snapshotter: service.snapshotter, registry: client });
      assert.equal(layers.length, 2);
      // The uuids read by range are those the base build sealed.
      const baseStore = new ContentStore(join(work.path, 'root-base'));
      for (const l of layers) {
        assert.equal(store.hasBlob(l.digest), false);
        assert.equal(l.origin?.repository, `${reg.host}/test/lazy-base`);
        const made = await baseStore.getLayer(l.digest);
        assert.ok(made);
        assert.equal(l.uuid, made.uuid);
        assert.equal(l.parentUuid, made.parentUuid);
      }
      assert.deepEqual(await store.getLayer(layers[1]!.digest), layers[1]);

      const lowers = chainLowers(store, layers, { registry: client });
      assert.deepEqual(lowers.map((l) => l.kind), ['remote', 'remote']);
      const writable = await mkdtemp(join(store.workDir, 'step-'));
      try {
        const handle = await service.snapshotter.prepare(writable, lowers);
        let pair;
        try {
          // Asynchronous file system calls, as a device may ask this thread for ranges.
          const small = await readFile(join(handle.mountpoint, 'small.txt'), 'utf8');
          await writeFile(join(handle.mountpoint, 'copy.txt'), small);
          pair = await service.snapshotter.commit(handle);
        } catch (err) {
          await service.snapshotter.remove(handle);
          throw err;
        }
        const top = layers[1]!;
        const { layer, stats } = await sealStep({
          upper: pair,
          lowers,
          remote: service.remoteFetcher,
          uuid: stepLayerUuid(layers.map((l) => l.digest), 'sha256:' + '5'.repeat(64)),
          parentUuid: top.uuid,
          userTag: 'copy small.txt',
          store,
        });
        assert.ok(layer);
        t.diagnostic(`step layer ${layer.size} bytes; dedup ${JSON.stringify(stats)}`);
        assert.ok(layer.size < 1024 * 1024, `step layer is ${layer.size} bytes`);
        assert.equal(layer.parentUuid, top.uuid);

        const baseBytes = layers.reduce((a, l) => a + l.size, 0);
        const c = await service.remoteFetcher.counters();
        t.diagnostic(`base blobs ${baseBytes} bytes; fetched ${c.networkBytes} bytes in ${c.networkRequests} range requests`);
        assert.ok(baseBytes > 32 * 1024 * 1024);
        assert.ok(c.networkBytes > 0);
        assert.ok(c.networkBytes < baseBytes / 4, `fetched ${c.networkBytes} of ${baseBytes} bytes`);
        for (const l of layers) assert.equal(store.hasBlob(l.digest), false, `base blob ${l.digest} must not be downloaded`);

        const oracle = requireOracle(t);
        if (oracle) {
          const v = await obdCheck(oracle, store.blobPath(layer.digest));
          assert.equal(v.result, 'VALID', v.output);
        }
        const view = await service.snapshotter.view(chainLowers(store, [...layers, layer]));
        try {
          assert.equal(await readFile(join(view.mountpoint, 'copy.txt'), 'utf8'), 'small and read\n');
        } finally {
          await service.snapshotter.remove(view);
        }
      } finally {
        await rm(writable, { recursive: true, force: true });
      }
    } finally {
      await client.close();
      await service.close();
    }
  });

  // A RUN step reads its rootfs with synchronous calls on the main thread (user database, mount
  // stubs); the device's remote reads must then be answered off that thread, on the fetcher's own
  // (fetch-thread.ts `connect()`), which needs the FUSE export to take its ports from the fetcher.
  // Until it does, those reads stall until the device worker's deadline: opt in to run this.
  test('a RUN over it fetches a small fraction of the base and downloads no blob', async (t) => {
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx, { recursive: true });
    const service = await BuildService.open({ root: join(work.path, 'root-lazy'), maxParallelism: 1 });
    const contexts = new LocalDirContexts({ context: ctx }, service.store.workDir);
    try {
      const built = await runBuild(
        service,
        { dockerfile: `FROM ${baseRef}\nRUN cat /small.txt > /copy.txt\n` },
        { contexts, ...(process.env.OBDKIT_TEST_VERBOSE ? { progress: (e) => process.stderr.write(`${JSON.stringify(e)}\n`) } : {}) },
      );
      const layers = built.chain.layers;
      assert.equal(layers.length, 3, 'two base layers and the RUN layer');
      const base = layers.slice(0, 2);
      const top = layers[2]!;
      for (const l of base) {
        assert.equal(l.origin?.repository, `${reg.host}/test/lazy-base`);
        assert.equal(service.store.hasBlob(l.digest), false, `base blob ${l.digest} must not be downloaded`);
      }
      assert.equal(top.origin, undefined);
      assert.ok(service.store.hasBlob(top.digest));
      assert.equal(top.parentUuid, base[1]!.uuid);

      const baseBytes = base.reduce((a, l) => a + l.size, 0);
      const c = await service.remoteFetcher.counters();
      t.diagnostic(`base blobs ${baseBytes} bytes; fetched ${c.networkBytes} bytes in ${c.networkRequests} range requests`);
      assert.ok(baseBytes > 32 * 1024 * 1024);
      assert.ok(c.networkBytes > 0, 'the device read the base from the registry');
      assert.ok(c.networkBytes < baseBytes / 4, `fetched ${c.networkBytes} of ${baseBytes} bytes`);

      // The new layer carries only what the step changed, chained to the base.
      const f = new FileRandomAccess(service.store.blobPath(top.digest));
      try {
        const sealed = openSealedLayer(unwrapLayerBlob(f).lsmt);
        assert.equal(sealed.parentUuid, base[1]!.uuid);
        assert.ok(top.size < 1024 * 1024, `RUN layer is ${top.size} bytes`);
      } finally {
        f.close();
      }
      const oracle = requireOracle(t);
      if (oracle) {
        const v = await obdCheck(oracle, service.store.blobPath(top.digest));
        assert.equal(v.result, 'VALID', v.output);
      }

      // The chain reads back: base file through the registry, new file from the local layer.
      const view = await service.snapshotter.view(chainLowers(service.store, layers));
      try {
        // Asynchronous reads, as a device may ask this thread for ranges.
        assert.equal(await readFile(join(view.mountpoint, 'copy.txt'), 'utf8'), 'small and read\n');
        assert.equal(await readFile(join(view.mountpoint, 'small.txt'), 'utf8'), 'small and read\n');
      } finally {
        await service.snapshotter.remove(view);
      }
      for (const l of base) assert.equal(service.store.hasBlob(l.digest), false);
    } finally {
      contexts.close?.();
      await service.close();
    }
  });
});
