// The one teardown order for a device, used by live devices and by stale-state cleanup alike:
// unmount the filesystem → detach the loop device (and wait until the kernel has let go) → unmount
// the FUSE mount → stop the serving threads. Doing it in another order leaves a FUSE connection
// that a loop device still holds, or a loop device over a dead FUSE file.
import { rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../../src/util/log.js';
import { FUSE_FSTYPE } from '../device/fuse-export.js';
import { MNT_DETACH, umount2Syscall } from '../device/syscalls.js';
import { listMounts, unmount } from './ext4.js';
import { detachLoop, listLoops, loopBackingFile } from './loop.js';
import { deviceDir, listDeviceIds, pidAlive, readState, removeState } from './state.js';

export interface TeardownTarget {
  mountpoint?: string;
  loop?: string;
  fuseDir: string;
  /** Stops the FUSE server when it lives in this process. */
  stopServer?: () => Promise<void>;
}

export async function teardown(t: TeardownTarget): Promise<void> {
  const disk = join(t.fuseDir, 'disk');
  if (t.mountpoint) {
    const mounts = await listMounts();
    // Only unmount what is ours: the filesystem on our loop device.
    const m = mounts.filter((x) => x.target === t.mountpoint && (t.loop === undefined || x.source === t.loop));
    if (m.length > 0) await unmount(t.mountpoint);
  }
  const loops = new Set<string>();
  if (t.loop && (await loopBackingFile(t.loop)) === disk) loops.add(t.loop);
  for (const l of await listLoops()) if (l.backingFile === disk) loops.add(l.device);
  for (const l of loops) await detachLoop(l);
  if (t.stopServer) await t.stopServer();
  else if ((await listMounts()).some((m) => m.target === t.fuseDir && m.fstype === FUSE_FSTYPE)) umount2Syscall(t.fuseDir, MNT_DETACH);
}

/**
 * Removes what crashed processes left behind: state records whose process is gone, and FUSE
 * mounts of ours under the run dir that no live record claims (with the loop devices and ext4
 * mounts stacked on them). Returns the ids cleaned.
 */
export async function cleanupStale(runDir: string): Promise<string[]> {
  const cleaned: string[] = [];
  const claimed = new Set<string>();
  for (const id of listDeviceIds(runDir)) {
    const s = readState(runDir, id);
    const fuseDir = join(deviceDir(runDir, id), 'fuse');
    if (s && pidAlive(s.pid)) {
      claimed.add(s.fuseDir);
      continue;
    }
    try {
      const loop = s?.loop ?? (await findLoopFor(join(fuseDir, 'disk')));
      const target: TeardownTarget = { fuseDir: s?.fuseDir ?? fuseDir };
      if (loop) target.loop = loop;
      const mp = s?.mountpoint ?? (loop ? (await listMounts()).find((m) => m.source === loop)?.target : undefined);
      if (mp) target.mountpoint = mp;
      await teardown(target);
      removeState(runDir, id);
      cleaned.push(id);
      log.info({ id, pid: s?.pid }, 'removed stale device');
    } catch (err) {
      log.warn({ id, err: err instanceof Error ? err.message : String(err) }, 'could not remove stale device');
    }
  }
  const prefix = join(runDir, 'devices') + '/';
  for (const m of await listMounts()) {
    if (m.fstype !== FUSE_FSTYPE || !m.target.startsWith(prefix) || claimed.has(m.target)) continue;
    const loop = await findLoopFor(join(m.target, 'disk'));
    const target: TeardownTarget = { fuseDir: m.target };
    if (loop) {
      target.loop = loop;
      const mp = (await listMounts()).find((x) => x.source === loop)?.target;
      if (mp) target.mountpoint = mp;
    }
    await teardown(target);
    try {
      rmdirSync(m.target);
    } catch {
      // not empty or busy: left as is
    }
    cleaned.push(m.target);
  }
  return cleaned;
}

async function findLoopFor(disk: string): Promise<string | undefined> {
  return (await listLoops()).find((l) => l.backingFile === disk)?.device;
}
