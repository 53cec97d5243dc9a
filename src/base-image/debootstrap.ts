// Running debootstrap to make a Debian root filesystem, and leaving no trace of it behind: the
// mounts debootstrap makes inside the target (proc, sys, dev/pts) are undone even when it fails,
// and the tree is removed with --one-file-system so a mount that survives can never be recursed
// into. trimRootfs then drops what an image should not carry (apt lists and caches, logs with
// timestamps, device nodes, the build host's name). debian-base.ts drives these steps.
import { readFile, readdir, rm, truncate, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { log } from '../util/log.js';

export interface DebootstrapOptions {
  suite: string;
  mirror: string;
  /** Debian architecture name (amd64, arm64, ...). */
  arch: string;
  variant: string;
  target: string;
  /** Whole run limit (default 30 minutes). */
  timeoutMs?: number;
}

/** Node's process.arch as Debian names it. */
export function debianArch(nodeArch: string = process.arch): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'armhf', ia32: 'i386', ppc64: 'ppc64el', s390x: 's390x', riscv64: 'riscv64' };
  const a = map[nodeArch];
  if (a === undefined) throw new ObdkitError('EBASE_ARCH', `no Debian architecture for ${nodeArch}`);
  return a;
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    // Mount points escape space, tab, newline and backslash as \ooo.
    const mp = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || mp.startsWith(prefix)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Unmounts everything below `dir`; throws if something stays mounted. */
export async function unmountUnder(dir: string): Promise<void> {
  for (const mp of await mountsUnder(dir)) {
    const r = await execa('umount', [mp], { reject: false });
    if (r.exitCode !== 0) await execa('umount', ['-l', mp], { reject: false });
  }
  const left = await mountsUnder(dir);
  if (left.length > 0) {
    throw new ObdkitError('EBASE_MOUNTS', `still mounted below the debootstrap target: ${left.join(', ')}`, { file: dir });
  }
}

/** Removes a tree that may have held mounts: unmount first, and never cross into another filesystem. */
export async function removeTree(dir: string): Promise<void> {
  await unmountUnder(dir);
  await execa('rm', ['-rf', '--one-file-system', '--', dir]);
}

export async function runDebootstrap(o: DebootstrapOptions): Promise<void> {
  const args = [`--variant=${o.variant}`, `--arch=${o.arch}`, o.suite, o.target, ...(o.mirror ? [o.mirror] : [])];
  log.info({ args }, 'running debootstrap');
  const r = await execa('debootstrap', args, {
    reject: false,
    all: true,
    timeout: o.timeoutMs ?? 30 * 60_000,
    env: { LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' },
  });
  try {
    if (r.exitCode !== 0 || r.timedOut) {
      let detail = (r.all ?? '').split('\n').slice(-15).join('\n');
      try {
        const dlog = await readFile(join(o.target, 'debootstrap', 'debootstrap.log'), 'utf8');
        detail += `\n--- debootstrap.log (end) ---\n${dlog.split('\n').slice(-25).join('\n')}`;
      } catch {
        // no log written: the output above is all there is
      }
      throw new ObdkitError(
        'EBASE_DEBOOTSTRAP',
        `debootstrap ${o.suite} from ${o.mirror || 'its default mirror'} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}):\n${detail}`,
        { file: o.target },
      );
    }
  } finally {
    await unmountUnder(o.target);
  }
}

async function removeChildren(dir: string, keep: (name: string) => boolean = () => false): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  for (const n of names) if (!keep(n)) await rm(join(dir, n), { recursive: true, force: true });
}

/** Drops per-build and host-specific files that do not belong in an image. */
export async function trimRootfs(root: string): Promise<void> {
  // Deleting below a live proc/sys/dev mount would reach the host: make sure there is none.
  await unmountUnder(root);
  await removeChildren(join(root, 'var/lib/apt/lists'));
  await removeChildren(join(root, 'var/cache/apt/archives'), (n) => !n.endsWith('.deb') && n !== 'partial');
  await removeChildren(join(root, 'var/cache/apt/archives/partial'));
  await removeChildren(join(root, 'var/cache/apt'), (n) => !n.endsWith('.bin'));
  for (const f of ['var/log/bootstrap.log', 'var/log/dpkg.log', 'var/log/alternatives.log', 'var/cache/ldconfig/aux-cache']) {
    await rm(join(root, f), { force: true });
  }
  await removeChildren(join(root, 'var/log/apt'));
  // The runtime provides /dev, /proc, /sys and a fresh /tmp; the image keeps only the directories.
  for (const d of ['dev', 'proc', 'sys', 'tmp', 'run/lock']) await removeChildren(join(root, d));
  // Copied from the build host by debootstrap; the runtime writes its own at container start.
  for (const f of ['etc/hostname', 'etc/resolv.conf']) {
    try {
      if ((await lstat(join(root, f))).isFile()) await truncate(join(root, f), 0);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
}
