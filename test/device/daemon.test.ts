// The background daemon behind `obdkit mount`/`obdkit umount`, as real processes: the CLI round
// trip, and crash safety — kill -9 of the daemon while a writer runs, then a restart over the same
// writable dir must keep every write that was fsynced before the kill.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { execa } from 'execa';
import { registerMountCommands } from '../../src/cli/mount.js';
import { startDaemon, stopDaemon } from '../../worker/mount/launcher.js';
import { deviceDir, pidAlive } from '../../worker/mount/state.js';
import { cleanupStale } from '../../worker/mount/teardown.js';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanAll, leftovers, sh, skipReason, tempDir, TEST_RUN_DIR } from './helpers.js';

const skip = skipReason();

async function cli(...args: string[]): Promise<void> {
  const program = new Command().exitOverride();
  registerMountCommands(program);
  await program.parseAsync(['node', 'obdkit', ...args]);
}

describe('device daemon', { skip }, () => {
  before(cleanAll);
  after(cleanAll);

  test('obdkit mount --writable then obdkit umount, and a remount over the same writable dir sees the data', async () => {
    const t = tempDir('cli');
    try {
      const mp = `${t.path}/mnt`;
      await cli('mount', '--run-dir', TEST_RUN_DIR, '--writable', `${t.path}/w`, mp);
      await sh(`head -c 3000000 /dev/urandom > ${t.path}/src && cp ${t.path}/src ${mp}/file && sync`);
      await cli('umount', '--run-dir', TEST_RUN_DIR, mp);
      assert.deepEqual(await leftovers(), []);
      await cli('mount', '--run-dir', TEST_RUN_DIR, '--writable', `${t.path}/w`, mp);
      assert.equal(await sh(`cmp ${t.path}/src ${mp}/file && echo same`), 'same');
      await cli('umount', '--run-dir', TEST_RUN_DIR, mp);
      assert.deepEqual(await leftovers(), []);
    } finally {
      await cleanAll();
      t.cleanup();
    }
  });

  test('obdkit mount LAYER... MOUNTPOINT mounts the golden ext4 stack read-only (first layer is the bottom)', async () => {
    const t = tempDir('cli-ro');
    const samples = new URL('../../../testdata/overlaybd-samples/', import.meta.url).pathname;
    try {
      await sh(`tar -xzf ${samples}/ext4_64.tar.gz -C ${t.path}`);
      const mp = `${t.path}/mnt`;
      await cli('mount', '--run-dir', TEST_RUN_DIR, `${t.path}/ext4_64`, `file:${samples}/ext4-layer0.commit.lz4.zfile.tar`, `${samples}/ext4-layer1.commit.lz4.zfile.tar`, mp);
      assert.equal(await sh(`cat ${mp}/etc/hello.txt`), 'hello overwritten by B');
      assert.match(await sh(`touch ${mp}/x 2>&1 || true`), /Read-only file system/);
      await cli('umount', '--run-dir', TEST_RUN_DIR, mp);
      assert.deepEqual(await leftovers(), []);
      await assert.rejects(cli('mount', '--run-dir', TEST_RUN_DIR, 'docker://busybox:latest', mp), /only local layer files/);
    } finally {
      await cleanAll();
      t.cleanup();
    }
  });

  test('after a crash that also lost the state file, the next start finds the FUSE mount, loop and ext4 mount and removes them', async () => {
    const t = tempDir('stale');
    try {
      const mp = `${t.path}/mnt`;
      const d = await startDaemon(TEST_RUN_DIR, { mountpoint: mp, lowers: [], writableDir: `${t.path}/w` });
      process.kill(d.pid, 'SIGKILL');
      while (pidAlive(d.pid)) await new Promise((res) => setTimeout(res, 20));
      rmSync(join(deviceDir(TEST_RUN_DIR, d.id), 'state.json'));
      assert.notDeepEqual(await leftovers(), []);
      await cleanupStale(TEST_RUN_DIR);
      assert.deepEqual(await leftovers(), []);
      assert.equal(await sh(`grep -c " ${mp} " /proc/mounts || true`), '0');
    } finally {
      await cleanAll();
      t.cleanup();
    }
  });

  test('kill -9 of the daemon during writes keeps every fsynced write (crash recovery)', async () => {
    const t = tempDir('crash');
    let writer: ReturnType<typeof execa> | undefined;
    try {
      const mp = `${t.path}/mnt`;
      const d = await startDaemon(TEST_RUN_DIR, { mountpoint: mp, lowers: [], writableDir: `${t.path}/w` });
      await sh(`
        head -c 20000000 /dev/urandom > ${t.path}/a
        dd if=${t.path}/a of=${mp}/a bs=1M conv=fsync status=none
        mkdir -p ${mp}/d && for i in $(seq 1 20); do head -c 100000 ${t.path}/a > ${mp}/d/f$i; done
        sync -f ${mp}`);
      const want = await sh(`cd ${mp} && sha256sum a d/*`);
      writer = execa('bash', ['-c', `while :; do dd if=/dev/urandom of=${mp}/b bs=1M count=64 conv=fsync status=none; done`], { reject: false });
      await new Promise((res) => setTimeout(res, 700));
      process.kill(d.pid, 'SIGKILL');
      while (pidAlive(d.pid)) await new Promise((res) => setTimeout(res, 20));
      writer.kill('SIGKILL');
      await writer;
      writer = undefined;
      await stopDaemon(TEST_RUN_DIR, mp); // cleans the crashed daemon's mount, loop and FUSE mount
      assert.deepEqual(await leftovers(), []);
      const d2 = await startDaemon(TEST_RUN_DIR, { mountpoint: mp, lowers: [], writableDir: `${t.path}/w` });
      assert.notEqual(d2.pid, d.pid);
      assert.equal(await sh(`cd ${mp} && sha256sum a d/*`), want);
      await stopDaemon(TEST_RUN_DIR, mp);
      assert.deepEqual(await leftovers(), []);
    } finally {
      writer?.kill('SIGKILL');
      await cleanAll();
      t.cleanup();
    }
  });
});
