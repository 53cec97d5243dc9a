// ext4 on the device: mkfs with the parameters of overlaybd's base layer (4 KiB blocks, inode ratio
// 16384, 256-byte inodes, no journal, no metadata_csum, one group per flex group, sparse_super2),
// mount with `discard` so deleted blocks reach the writable layer as zeroed records, remount
// read-only and back (a clean filesystem image at a step boundary, device kept), and unmount.
//
// mkfs is the mke2fs program; mount, remount and unmount are mount(2)/umount2(2) calls made on a
// koffi worker thread (src/util/syscalls.ts): each may wait on I/O of the loop device, which this
// very process may be serving through FUSE, so the main thread must stay free meanwhile.
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { MNT_DETACH, MS_RDONLY, MS_REMOUNT, mountAsync, syscallReason, umount2Async } from '../../src/util/syscalls.js';

export const MKFS_ARGS = [
  '-F',
  '-q',
  '-t',
  'ext4',
  '-b',
  '4096',
  '-i',
  '16384',
  '-I',
  '256',
  '-m',
  '5',
  '-G',
  '1',
  '-O',
  '^has_journal,^metadata_csum,^orphan_file,64bit,sparse_super2',
  '-E',
  'nodiscard',
];

export async function mkfsExt4(device: string): Promise<void> {
  const r = await execa('mkfs.ext4', [...MKFS_ARGS, device], { reject: false });
  if (r.exitCode !== 0) throw new ObdkitError('EMKFS', `mkfs.ext4 failed: ${r.stderr.trim()}`, { file: device });
}

export async function mountExt4(device: string, mountpoint: string, opts: { readOnly: boolean }): Promise<void> {
  // noload: a read-only view never replays a journal (writing to a read-only device).
  const flags = opts.readOnly ? MS_RDONLY : 0;
  try {
    await mountAsync(device, mountpoint, 'ext4', flags, opts.readOnly ? 'noload' : 'discard');
  } catch (err) {
    throw new ObdkitError('EMOUNT', `mount of ext4 failed: ${syscallReason(err)}`, { file: mountpoint, device }, { cause: err });
  }
}

/**
 * Switches a mounted ext4 between read-only and read-write in place. Going read-only writes out
 * everything and marks the filesystem clean, so the device then holds a consistent image; it fails
 * with code EBUSY while a file on it is still open for writing.
 */
export async function remountExt4(mountpoint: string, opts: { readOnly: boolean }): Promise<void> {
  const flags = MS_REMOUNT | (opts.readOnly ? MS_RDONLY : 0);
  try {
    await mountAsync(null, mountpoint, null, flags, opts.readOnly ? null : 'discard');
  } catch (err) {
    const mode = opts.readOnly ? 'read-only' : 'read-write';
    if (errnoCode(err) === 'EBUSY') {
      throw new ObdkitError('EBUSY', `cannot remount ext4 ${mode}: a file on it is still open for writing`, { file: mountpoint }, { cause: err });
    }
    throw new ObdkitError('EREMOUNT', `remount of ext4 ${mode} failed: ${syscallReason(err)}`, { file: mountpoint }, { cause: err });
  }
}

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
}

export async function listMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source, target, fstype] = l.split(' ');
      return { source: unescape(source!), target: unescape(target!), fstype: fstype! };
    });
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export async function isMounted(target: string): Promise<boolean> {
  return (await listMounts()).some((m) => m.target === target);
}

/** umount2 said the path is not (or no longer) a mount point. */
function notMounted(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'EINVAL' || code === 'ENOENT';
}

/**
 * Unmounts everything mounted on `target`; retries while busy, then falls back to a lazy unmount so
 * teardown always proceeds. A target that is not mounted is fine.
 */
export async function unmount(target: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      // Mounts may be stacked on one path: repeat until it is no mount point any more.
      await umount2Async(target, 0);
      continue;
    } catch (err) {
      if (notMounted(err)) return;
      if (errnoCode(err) !== 'EBUSY') {
        throw new ObdkitError('EUMOUNT', `umount failed: ${syscallReason(err)}`, { file: target }, { cause: err });
      }
      if (Date.now() > deadline) {
        try {
          await umount2Async(target, MNT_DETACH);
          return;
        } catch (lazy) {
          if (notMounted(lazy)) return;
          throw new ObdkitError('EUMOUNT', `umount failed: ${syscallReason(err)}; lazy umount failed: ${syscallReason(lazy)}`,
            { file: target }, { cause: lazy });
        }
      }
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}
