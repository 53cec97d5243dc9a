// ext4 on the device: mkfs with the parameters of overlaybd's base layer (4 KiB blocks, inode ratio
// 16384, 256-byte inodes, no journal, no metadata_csum, one group per flex group, sparse_super2),
// mount with `discard` so deleted blocks reach the writable layer as zeroed records, and unmount.
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { ObdkitError } from '../../src/util/errors.js';

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
  const o = opts.readOnly ? 'ro,noload' : 'discard';
  const r = await execa('mount', ['-t', 'ext4', '-o', o, device, mountpoint], { reject: false });
  if (r.exitCode !== 0) throw new ObdkitError('EMOUNT', `mount of ext4 failed: ${r.stderr.trim()}`, { file: mountpoint, device });
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

/** Unmounts; retries while busy, then falls back to a lazy unmount so teardown always proceeds. */
export async function unmount(target: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isMounted(target))) return;
    const r = await execa('umount', [target], { reject: false });
    if (r.exitCode === 0) return;
    if (Date.now() > deadline) {
      const lazy = await execa('umount', ['-l', target], { reject: false });
      if (lazy.exitCode === 0) return;
      throw new ObdkitError('EUMOUNT', `umount failed: ${r.stderr.trim()}`, { file: target });
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}
