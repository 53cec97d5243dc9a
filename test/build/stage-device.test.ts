// One live device across the steps of a stage: each step's layer is the slice of the writable
// layer's records written since the previous checkpoint, sealed over the parent chain. Checked on the
// real device: the mount point is reused, every chain prefix is a clean ext4 that e2fsck accepts and
// that shows exactly that step's tree (deleted files gone), every layer passes the reference
// `obd-check`, a failing step tears its device down, and the pool leaves nothing behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { ContentStore } from '../../src/store/content-store.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import type { BlockSnapshotter } from '../../worker/device/snapshotter.js';
import { DevicePool, runOnWritableDevice, settleChain } from '../../worker/build/step-device.js';
import type { LayersResult } from '../../worker/build/result.js';
import { cleanAll, leftovers, sh, skipReason, tempDir, TEST_RUN_DIR } from '../device/helpers.js';
import { obdCheck, requireOracle } from '../helpers/oracle.js';

const skip = skipReason();

describe('stage device reused across steps', { skip }, () => {
  const snapshotter = new FuseLoopSnapshotter({ runDir: TEST_RUN_DIR, workers: 2 });
  let t: ReturnType<typeof tempDir>;
  let store: ContentStore;

  before(async () => {
    await cleanAll();
    t = tempDir('stage-device');
    store = new ContentStore(`${t.path}/root`);
  });
  after(async () => {
    await snapshotter.close();
    await cleanAll();
    t?.cleanup();
  });

  const blobs = (chain: LayersResult) => chain.layers.map((l) => ({ kind: 'file' as const, path: store.blobPath(l.digest) }));

  /** `ls -lR`-like listing and e2fsck verdict of a chain, read through a fresh read-only device. */
  async function inspect(chain: LayersResult): Promise<{ tree: string; fsck: number; state: string }> {
    const raw = await snapshotter.view(blobs(chain), { filesystem: 'none' });
    let fsck: number;
    let state: string;
    try {
      fsck = (await execa('e2fsck', ['-fn', raw.device], { reject: false })).exitCode ?? -1;
      const h = await execa('dumpe2fs', ['-h', raw.device], { reject: false });
      state = /Filesystem state:\s+(\S+)/.exec(h.stdout)?.[1] ?? '?';
    } finally {
      await snapshotter.remove(raw);
    }
    const v = await snapshotter.view(blobs(chain));
    try {
      const tree = await sh(`cd ${v.mountpoint} && find . -path ./lost+found -prune -o -type f -printf '%p %s %m\\n' | sort`);
      return { tree, fsck, state };
    } finally {
      await snapshotter.remove(v);
    }
  }

  test('three steps on one device: clean prefixes, exact trees, valid layers', async (tc) => {
    const pool = new DevicePool({ store, snapshotter });
    const mountpoints: string[] = [];
    const step = (parent: LayersResult, key: string, script: (root: string) => string) =>
      runOnWritableDevice(
        { store, snapshotter },
        parent,
        `sha256:${key.repeat(64).slice(0, 64)}`,
        key,
        async (root) => {
          mountpoints.push(root);
          await sh(script(root));
        },
        pool,
      );
    try {
      const empty: LayersResult = { kind: 'layers', layers: [], steps: [] };
      const s1 = await step(empty, 'a', (r) => `mkdir -p ${r}/data && head -c 3000000 /dev/urandom > ${r}/data/one && echo keep > ${r}/data/keep`);
      const s2 = await step(s1.result, 'b', (r) => `head -c 2000000 /dev/urandom > ${r}/data/two && rm ${r}/data/one && chmod 600 ${r}/data/keep`);
      const s3 = await step(s2.result, 'c', (r) => `echo three > ${r}/data/three`);
      assert.equal(new Set(mountpoints).size, 1, 'every step ran on the same mounted device');
      // Early results name the layers still being sealed; settled, they are the real chain.
      assert.equal(s3.result.unsealed?.length, 3);
      const c1 = await settleChain(s1.result);
      const c2 = await settleChain(s2.result);
      const c3 = await settleChain(s3.result);
      assert.equal(c3.layers.length, 3);
      assert.deepEqual(c3.steps, [true, true, true]);
      assert.deepEqual(c3.layers.slice(0, 2), c2.layers);
      // The second layer holds the new file, not the first step's data again.
      const l2 = (await s2.sealed).layer!;
      assert.ok(l2.size < 2_600_000, `second layer is ${l2.size} bytes`);

      const i1 = await inspect(c1);
      const i2 = await inspect(c2);
      const i3 = await inspect(c3);
      for (const i of [i1, i2, i3]) {
        assert.equal(i.fsck, 0, 'e2fsck finds nothing to fix');
        assert.equal(i.state, 'clean');
      }
      assert.match(i1.tree, /\.\/data\/one 3000000 644/);
      assert.match(i1.tree, /\.\/data\/keep 5 644/);
      assert.doesNotMatch(i2.tree, /data\/one/);
      assert.match(i2.tree, /\.\/data\/keep 5 600/);
      assert.match(i2.tree, /\.\/data\/two 2000000 644/);
      assert.match(i3.tree, /\.\/data\/three 6 644/);

      const dir = requireOracle(tc);
      if (dir) {
        for (const l of c3.layers) {
          const v = await obdCheck(dir, store.blobPath(l.digest));
          assert.equal(v.result, 'VALID', `${l.digest}: ${v.output}`);
        }
      }
    } finally {
      await pool.close();
    }
    assert.deepEqual(await leftovers(), []);
  });

  test('a snapshotter without checkpoints (TCMU) gets a device per step, sealed before the step returns', async () => {
    // The same real device, seen through the interface a TCMU snapshotter offers: no checkpoint().
    const plain: BlockSnapshotter = {
      prepare: (dir, lowers, o) => snapshotter.prepare(dir, lowers, o),
      view: (lowers, o) => snapshotter.view(lowers, o),
      commit: (h) => snapshotter.commit(h),
      remove: (h) => snapshotter.remove(h),
    };
    const pool = new DevicePool({ store, snapshotter: plain });
    const mountpoints: string[] = [];
    try {
      const empty: LayersResult = { kind: 'layers', layers: [], steps: [] };
      const s1 = await runOnWritableDevice({ store, snapshotter: plain }, empty, 'sha256:' + '1'.repeat(64), 'one', async (r) => {
        mountpoints.push(r);
        await sh(`echo one > ${r}/one`);
      }, pool);
      const s2 = await runOnWritableDevice({ store, snapshotter: plain }, s1.result, 'sha256:' + '2'.repeat(64), 'two', async (r) => {
        mountpoints.push(r);
        await sh(`test -e ${r}/one && echo two > ${r}/two`);
      }, pool);
      assert.notEqual(mountpoints[0], mountpoints[1]);
      assert.equal(s2.result.unsealed, undefined, 'nothing left to seal in the background');
      assert.equal(s2.result.layers.length, 2);
      const i = await inspect(s2.result);
      assert.equal(i.fsck, 0);
      assert.match(i.tree, /\.\/one /);
      assert.match(i.tree, /\.\/two /);
    } finally {
      await pool.close();
    }
    assert.deepEqual(await leftovers(), []);
  });

  test('a failing step tears its device down; the next step starts a fresh one', async () => {
    const pool = new DevicePool({ store, snapshotter });
    const mountpoints: string[] = [];
    try {
      const empty: LayersResult = { kind: 'layers', layers: [], steps: [] };
      const s1 = await runOnWritableDevice({ store, snapshotter }, empty, 'sha256:' + 'd'.repeat(64), 'd', async (r) => {
        mountpoints.push(r);
        await sh(`echo one > ${r}/one`);
      }, pool);
      await assert.rejects(
        runOnWritableDevice({ store, snapshotter }, s1.result, 'sha256:' + 'e'.repeat(64), 'e', async (r) => {
          mountpoints.push(r);
          await sh(`echo half > ${r}/half`);
          throw new Error('step failed');
        }, pool),
        /step failed/,
      );
      const s3 = await runOnWritableDevice({ store, snapshotter }, s1.result, 'sha256:' + 'f'.repeat(64), 'f', async (r) => {
        mountpoints.push(r);
        await sh(`test ! -e ${r}/half && echo two > ${r}/two`);
      }, pool);
      assert.equal(mountpoints[0], mountpoints[1]);
      assert.notEqual(mountpoints[1], mountpoints[2], 'the failed step\'s device was not reused');
      const i = await inspect(await settleChain(s3.result));
      assert.equal(i.fsck, 0);
      assert.doesNotMatch(i.tree, /half/);
      assert.match(i.tree, /\.\/one /);
      assert.match(i.tree, /\.\/two /);
    } finally {
      await pool.close();
    }
    assert.deepEqual(await leftovers(), []);
  });
});
