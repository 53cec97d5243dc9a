// Test fixtures for worker/exec: a tiny busybox-static rootfs with a non-root user, optionally on a
// loop-mounted ext4 image like the real device path, plus temp-dir helpers with guaranteed cleanup.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'];

function busyboxPath(): string {
  for (const p of BUSYBOX) {
    try {
      execFileSync(p, ['true']);
      return p;
    } catch {
      /* try the next */
    }
  }
  throw new Error('busybox-static is required (apt-get install -y busybox-static)');
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `obdkit-${prefix}-`));
}

/** Populates `root` with busybox, applet links and a user database (root, app:1000, staff group). */
export function makeBusyboxRootfs(root: string): void {
  execFileSync('chmod', ['0755', root]);
  for (const d of ['bin', 'etc', 'tmp', 'root', 'home/app', 'run']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(busyboxPath(), join(root, 'bin/busybox'));
  execFileSync('chmod', ['0755', join(root, 'bin/busybox')]);
  const applets = execFileSync(busyboxPath(), ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', join(root, 'bin', a));
  writeFileSync(
    join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  );
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nstaff:x:50:app\nwheel:x:10:app,root\napp:x:1000:\nnogroup:x:65534:\n');
  execFileSync('chmod', ['1777', join(root, 'tmp')]);
  execFileSync('chown', ['1000:1000', join(root, 'home/app')]);
}

/** A busybox rootfs on a freshly made, loop-mounted ext4 image. Call `close` in a finally block. */
export function makeExt4Rootfs(sizeMiB = 64): { root: string; close: () => void } {
  const dir = tempDir('ext4');
  const img = join(dir, 'img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  execFileSync('truncate', ['-s', `${sizeMiB}M`, img]);
  execFileSync('mkfs.ext4', ['-F', '-q', img]);
  let mounted = false;
  try {
    execFileSync('mount', ['-o', 'loop', img, mnt]);
    mounted = true;
    makeBusyboxRootfs(mnt);
  } catch (err) {
    if (mounted) execFileSync('umount', [mnt]);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    root: mnt,
    close: () => {
      execFileSync('umount', [mnt]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
