// The embedded device end to end on the real kernel: FUSE file served by this process, loop device,
// ext4. Patterns and a tar tree written through ext4 must read back identically, also after the
// device is stopped and the writable layer reopened; two devices run at once; teardown leaves
// nothing behind; a failing read reaches the reader as EIO instead of hanging.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { truncateSync } from 'node:fs';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import { cleanAll, leftovers, sh, skipReason, tempDir, TEST_RUN_DIR } from './helpers.js';

const skip = skipReason();

describe('FUSE + loop device', { skip }, () => {
  const snap = new FuseLoopSnapshotter({ runDir: TEST_RUN_DIR, workers: 3 });
  before(cleanAll);
  after(async () => {
    await snap.close();
    await cleanAll();
  });

  test('byte patterns written through ext4 read back, also after reopening the writable layer', async () => {
    const t = tempDir('pattern');
    try {
      const h = await snap.prepare(`${t.path}/w`, [], { virtualSize: 4 * 1024 ** 3 });
      await sh(`
        python3 -c "
import sys
b = bytearray()
for i in range(8 * 1024 * 1024 // 4):
    b += (i * 2654435761 % 2**32).to_bytes(4, 'little')
open('${t.path}/pattern', 'wb').write(b)"
        cp ${t.path}/pattern ${h.mountpoint}/pattern
        dd if=/dev/urandom of=${t.path}/rand bs=1M count=40 status=none
        cp ${t.path}/rand ${h.mountpoint}/rand
        mkdir -p ${h.mountpoint}/dir && for i in $(seq 1 50); do head -c $((i * 777)) ${t.path}/rand > ${h.mountpoint}/dir/f$i; done
        sync`);
      const before = await sh(`cd ${h.mountpoint} && sha256sum pattern rand dir/*`);
      assert.match(before, /pattern/);
      const pair = await snap.commit(h);
      const h2 = await snap.prepare(`${t.path}/w`, []);
      assert.deepEqual(h2.upper, pair);
      const again = await sh(`cd ${h2.mountpoint} && sha256sum pattern rand dir/*`);
      assert.equal(again, before);
      assert.equal(await sh(`cmp ${t.path}/pattern ${h2.mountpoint}/pattern && cmp ${t.path}/rand ${h2.mountpoint}/rand && echo same`), 'same');
      await snap.remove(h2);
    } finally {
      t.cleanup();
    }
  });

  test('a tar tree extracted onto the device has the checksums of its source', async () => {
    const t = tempDir('tar');
    try {
      await sh(`
        mkdir -p ${t.path}/src && cd ${t.path}/src
        for d in $(seq 1 20); do mkdir -p d$d/sub; for f in $(seq 1 30); do head -c $(( (d * 131 + f * 977) % 70000 )) /dev/urandom > d$d/sub/f$f; done; done
        ln -s d1/sub/f1 link && ln d2/sub/f2 hard && chmod 4755 d3/sub/f3
        tar -cf ${t.path}/tree.tar -C ${t.path}/src .`);
      const h = await snap.prepare(`${t.path}/w`, [], { virtualSize: 8 * 1024 ** 3 });
      await sh(`tar -xpf ${t.path}/tree.tar -C ${h.mountpoint} && sync`);
      const sums = (dir: string) => sh(`cd ${dir} && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 sha256sum`);
      const src = await sums(`${t.path}/src`);
      assert.equal(await sums(h.mountpoint), src);
      assert.equal(await sh(`readlink ${h.mountpoint}/link; stat -c %h ${h.mountpoint}/hard; stat -c %a ${h.mountpoint}/d3/sub/f3`), 'd1/sub/f1\n2\n4755');
      await snap.commit(h);
      const h2 = await snap.prepare(`${t.path}/w`, []);
      assert.equal(await sums(h2.mountpoint), src);
      await snap.remove(h2);
    } finally {
      t.cleanup();
    }
  });

  test('deleting files discards: the writable index gains zeroed records and the data reads as zeros', async () => {
    const t = tempDir('discard');
    try {
      const h = await snap.prepare(`${t.path}/w`, [], { virtualSize: 2 * 1024 ** 3 });
      await sh(`dd if=/dev/urandom of=${h.mountpoint}/big bs=1M count=16 status=none conv=fsync`);
      const blocks = (await sh(`filefrag -v ${h.mountpoint}/big | awk '/^ *0:/ {print $4}' | tr -d .`)).trim();
      const first = Number(blocks);
      assert.ok(first > 0, `first block of big: ${blocks}`);
      const indexBefore = Number(await sh(`stat -c %s ${t.path}/w/writable_index`));
      await sh(`rm ${h.mountpoint}/big && sync && fstrim ${h.mountpoint} || true; sync`);
      const indexAfter = Number(await sh(`stat -c %s ${t.path}/w/writable_index`));
      assert.ok(indexAfter > indexBefore, 'discard appended records');
      const zeros = await sh(`dd if=${h.device} bs=4096 skip=${first} count=16 iflag=direct status=none | tr -d '\\0' | wc -c`);
      assert.equal(zeros.trim(), '0');
      await snap.remove(h);
    } finally {
      t.cleanup();
    }
  });

  test('two devices are mounted and written at the same time', async () => {
    const t = tempDir('two');
    try {
      const a = await snap.prepare(`${t.path}/a`, [], { virtualSize: 2 * 1024 ** 3 });
      const b = await snap.prepare(`${t.path}/b`, [], { virtualSize: 2 * 1024 ** 3 });
      assert.notEqual(a.device, b.device);
      await sh(`
        dd if=/dev/urandom of=${t.path}/x bs=1M count=20 status=none
        dd if=/dev/urandom of=${t.path}/y bs=1M count=20 status=none
        cp ${t.path}/x ${a.mountpoint}/f & cp ${t.path}/y ${b.mountpoint}/f & wait; sync
        cmp ${t.path}/x ${a.mountpoint}/f && cmp ${t.path}/y ${b.mountpoint}/f`);
      await snap.remove(a);
      await snap.remove(b);
    } finally {
      t.cleanup();
    }
  });

  test('a read the device cannot serve fails with EIO instead of hanging', async () => {
    const t = tempDir('eio');
    try {
      const h = await snap.prepare(`${t.path}/w`, [], { virtualSize: 1024 ** 3 });
      await sh(`dd if=/dev/urandom of=${h.device} bs=1M count=4 seek=100 oflag=direct status=none`);
      // Cut the data file under the live device: the mapped sectors now point past its end.
      truncateSync(`${t.path}/w/writable_data`, 4096);
      const r = await sh(`dd if=${h.device} of=/dev/null bs=1M count=4 skip=100 iflag=direct status=none 2>&1; echo rc=$?`, 30_000).catch((e: Error) => e.message);
      assert.match(r, /Input\/output error/);
      await snap.remove(h);
    } finally {
      t.cleanup();
    }
  });

  test('teardown leaves no mount, loop device or FUSE mount behind', async () => {
    await snap.close();
    await cleanAll();
    assert.deepEqual(await leftovers(), []);
  });
});
