// Loop devices and ext4 mounts made through ioctls and mount(2) on real devices: direct I/O and the
// read-only flag as the kernel reports them in sysfs, concurrent attaches, mount / remount / unmount
// of a fresh ext4, a remount refused while a file is open for writing, and the lazy fallback of a
// busy unmount. Needs root and /dev/loop-control.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { isMounted, listMounts, mkfsExt4, mountExt4, remountExt4, unmount } from '../../worker/mount/ext4.js';
import { attachLoop, detachLoop, listLoops, loopBackingFile } from '../../worker/mount/loop.js';
import { ObdkitError } from '../../src/util/errors.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : !existsSync('/dev/loop-control') ? 'needs /dev/loop-control' : false;

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'obdkit-mount-test-'));
});
after(async () => {
  // Whatever a failed test left: mounts under our dir first, then loop devices over our files.
  for (const m of await listMounts()) if (m.target.startsWith(dir)) await unmount(m.target, 1000).catch(() => {});
  for (const l of await listLoops()) if (l.backingFile.startsWith(dir)) await detachLoop(l.device).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

function sparseFile(name: string, size: number): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, size);
  return p;
}

function sysfs(device: string, rel: string): string {
  return readFileSync(`/sys/block/${basename(device)}/${rel}`, 'utf8').trim();
}

function mountOptions(target: string): string[] {
  const line = readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === target);
  assert.ok(line, `${target} is mounted`);
  return line.split(' ')[3]!.split(',');
}

/** Runs `fn` with `file` attached; always detaches. */
async function withLoop<T>(file: string, readOnly: boolean, fn: (device: string) => Promise<T>): Promise<T> {
  const device = await attachLoop(file, { readOnly });
  try {
    return await fn(device);
  } finally {
    await detachLoop(device);
  }
}

describe('loop devices', { skip }, () => {
  test('attach read-write and read-only: direct I/O on, ro as asked, listed, and gone after detach', async () => {
    const file = sparseFile('plain', 64 << 20);
    for (const readOnly of [false, true]) {
      const device = await attachLoop(file, { readOnly });
      try {
        assert.match(device, /^\/dev\/loop\d+$/);
        assert.equal(sysfs(device, 'loop/dio'), '1', 'direct I/O');
        assert.equal(sysfs(device, 'ro'), readOnly ? '1' : '0', 'read-only flag');
        assert.equal(sysfs(device, 'size'), String((64 << 20) / 512));
        assert.equal(await loopBackingFile(device), file);
        assert.ok((await listLoops()).some((l) => l.device === device && l.backingFile === file));
      } finally {
        await detachLoop(device);
      }
      assert.equal(await loopBackingFile(device), null);
      assert.ok(!(await listLoops()).some((l) => l.device === device && l.backingFile === file));
    }
  });

  test('concurrent attaches get different devices', async () => {
    const files = [0, 1, 2, 3].map((i) => sparseFile(`c${i}`, 8 << 20));
    const settled = await Promise.allSettled(files.map((f, i) => attachLoop(f, { readOnly: i % 2 === 1 })));
    const devices = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    try {
      assert.equal(devices.length, files.length, String(settled.find((s) => s.status === 'rejected')?.reason));
      assert.equal(new Set(devices).size, devices.length, `distinct devices: ${devices.join(' ')}`);
      for (const [i, d] of devices.entries()) assert.equal(await loopBackingFile(d), files[i]);
    } finally {
      await Promise.all(devices.map((d) => detachLoop(d)));
    }
  });

  test('a missing backing file fails with ELOOP naming it; detaching a free device is a no-op', async () => {
    const missing = join(dir, 'missing');
    await assert.rejects(attachLoop(missing), (err: unknown) => err instanceof ObdkitError && err.code === 'ELOOP' && err.message.includes(missing));
    const file = sparseFile('twice', 8 << 20);
    const device = await attachLoop(file);
    await detachLoop(device);
    await detachLoop(device);
    assert.equal(await loopBackingFile(device), null);
  });
});

describe('ext4 mounts', { skip }, () => {
  test('mount read-write, remount read-only and back, unmount', async () => {
    const file = sparseFile('fs', 128 << 20);
    const mnt = join(dir, 'mnt-rw');
    mkdirSync(mnt);
    await withLoop(file, false, async (device) => {
      await mkfsExt4(device);
      await mountExt4(device, mnt, { readOnly: false });
      try {
        assert.ok(await isMounted(mnt));
        assert.ok(mountOptions(mnt).includes('rw'));
        assert.ok(mountOptions(mnt).includes('discard'));
        writeFileSync(join(mnt, 'a'), 'before');

        await remountExt4(mnt, { readOnly: true });
        assert.ok(mountOptions(mnt).includes('ro'));
        assert.throws(() => writeFileSync(join(mnt, 'b'), 'x'), (err: NodeJS.ErrnoException) => err.code === 'EROFS');
        assert.equal(readFileSync(join(mnt, 'a'), 'utf8'), 'before');

        await remountExt4(mnt, { readOnly: false });
        assert.ok(mountOptions(mnt).includes('rw'));
        assert.ok(mountOptions(mnt).includes('discard'));
        writeFileSync(join(mnt, 'b'), 'after');
      } finally {
        await unmount(mnt);
      }
      assert.equal(await isMounted(mnt), false);

      // What was written survives, and a read-only mount of the same device sees it.
      await mountExt4(device, mnt, { readOnly: true });
      try {
        assert.ok(mountOptions(mnt).includes('ro'));
        assert.equal(readFileSync(join(mnt, 'a'), 'utf8'), 'before');
        assert.equal(readFileSync(join(mnt, 'b'), 'utf8'), 'after');
      } finally {
        await unmount(mnt);
      }
    });
  });

  test('remount read-only with a file open for writing fails with EBUSY naming the mountpoint', async () => {
    const file = sparseFile('fs-busy-remount', 64 << 20);
    const mnt = join(dir, 'mnt-busy-remount');
    mkdirSync(mnt);
    await withLoop(file, false, async (device) => {
      await mkfsExt4(device);
      await mountExt4(device, mnt, { readOnly: false });
      try {
        const fd = openSync(join(mnt, 'open'), 'w');
        try {
          writeSync(fd, 'x');
          await assert.rejects(remountExt4(mnt, { readOnly: true }), (err: unknown) => {
            assert.ok(err instanceof ObdkitError);
            assert.equal(err.code, 'EBUSY');
            assert.equal(err.context.file, mnt);
            assert.ok(err.message.includes(mnt));
            return true;
          });
          assert.ok(mountOptions(mnt).includes('rw'), 'still read-write');
        } finally {
          closeSync(fd);
        }
        await remountExt4(mnt, { readOnly: true });
        assert.ok(mountOptions(mnt).includes('ro'));
      } finally {
        await unmount(mnt);
      }
    });
  });

  test('a busy unmount falls back to a lazy one; an unmounted path is fine', async () => {
    const file = sparseFile('fs-busy', 64 << 20);
    const mnt = join(dir, 'mnt-busy');
    mkdirSync(mnt);
    await withLoop(file, false, async (device) => {
      await mkfsExt4(device);
      await mountExt4(device, mnt, { readOnly: false });
      const fd = openSync(join(mnt, 'held'), 'w');
      try {
        await unmount(mnt, 300);
        assert.equal(await isMounted(mnt), false, 'lazily detached while the file is still open');
        writeSync(fd, 'still writable through the open descriptor');
      } finally {
        closeSync(fd);
        await unmount(mnt).catch(() => {});
      }
    });
    await unmount(mnt);
    await unmount(join(dir, 'does-not-exist'));
  });

  test('mounting something that is not ext4 fails with EMOUNT naming device and mountpoint', async () => {
    const file = sparseFile('not-ext4', 16 << 20);
    const mnt = join(dir, 'mnt-bad');
    mkdirSync(mnt);
    await withLoop(file, true, async (device) => {
      await assert.rejects(mountExt4(device, mnt, { readOnly: true }), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.code, 'EMOUNT');
        assert.equal(err.context.device, device);
        assert.ok(err.message.includes(mnt));
        return true;
      });
    });
    assert.equal(await isMounted(mnt), false);
  });
});
