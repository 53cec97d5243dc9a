// The embedded device export: the merged device is served by this process as one file in a FUSE
// mount (fuse-export.ts), a loop device with direct I/O is attached to that file, and ext4 on the
// loop device is mounted. Every device has a state record under the run dir so a crash can be
// cleaned up by the next start (worker/mount/teardown.ts).
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';
import { mkfsExt4, mountExt4, remountExt4 } from '../mount/ext4.js';
import { attachLoop } from '../mount/loop.js';
import { DEFAULT_RUN_DIR, deviceDir, removeState, writeState, type DeviceState } from '../mount/state.js';
import { cleanupStale, teardown } from '../mount/teardown.js';
import { FuseExport } from './fuse-export.js';
import type { LowerSpec } from './lower-source.js';
import { lowerStackVirtualSize } from './lower-stack.js';
import type { RemoteFetcher } from './remote-channel.js';
import { createPair, indexFileSize, recoverPair, type PairPaths } from './rw-pair.js';
import { SharedUpper, closeSharedFds, createSharedState, openSharedFds, type SharedUpperState } from './shared-upper.js';
import {
  DEFAULT_VIRTUAL_SIZE,
  pairPaths,
  type BlockSnapshotter,
  type DeviceHandle,
  type PrepareOptions,
  type ViewOptions,
} from './snapshotter.js';

export interface FuseLoopOptions {
  runDir?: string;
  /** FUSE worker threads per device. */
  workers?: number;
  /** Fetches ranges of remote lowers (the registry client); needed only for remote lowers. */
  remote?: RemoteFetcher;
}

interface LiveDevice {
  handle: DeviceHandle;
  state: DeviceState;
  exp: FuseExport;
  upper: SharedUpperState | null;
  lowerFds: number[];
}

export class FuseLoopSnapshotter implements BlockSnapshotter {
  readonly runDir: string;
  private readonly live = new Map<string, LiveDevice>();

  constructor(private readonly opts: FuseLoopOptions = {}) {
    this.runDir = opts.runDir ?? DEFAULT_RUN_DIR;
  }

  /**
   * Removes devices that crashed processes left under this run dir (mounts, loop devices, FUSE
   * mounts). Call once at start, before the first prepare/view.
   */
  cleanupStale(): Promise<string[]> {
    return cleanupStale(this.runDir);
  }

  async prepare(writableDir: string, lowers: LowerSpec[], opts: PrepareOptions = {}): Promise<DeviceHandle> {
    mkdirSync(writableDir, { recursive: true });
    const paths = pairPaths(writableDir);
    const haveData = existsSync(paths.data);
    const haveIndex = existsSync(paths.index);
    if (haveData !== haveIndex) {
      throw new ObdkitError('EPAIR', 'writable dir holds only one file of the RW pair', { file: haveData ? paths.index : paths.data });
    }
    const fresh = !haveData;
    if (fresh) {
      const vsize = lowers.length > 0 ? await lowerStackVirtualSize(lowers, this.opts.remote) : (opts.virtualSize ?? DEFAULT_VIRTUAL_SIZE);
      createPair(paths, vsize);
    }
    const rec = recoverPair(paths);
    if (rec.truncatedBytes > 0) {
      log.warn({ file: paths.index, bytes: rec.truncatedBytes }, 'recovered writable layer: cut index records written after the last flush');
    }
    let vsize = rec.virtualSize;
    if (vsize === 0 && lowers.length > 0) vsize = await lowerStackVirtualSize(lowers, this.opts.remote);
    if (vsize === 0) throw new ObdkitError('EVSIZE', 'the writable layer has no virtual size and there are no lowers', { file: paths.index });
    const upper = createSharedState(paths, vsize, rec.dataTail, rec.records);
    return this.start({ size: vsize, upper, lowers, writableDir, mkfs: fresh && lowers.length === 0 && opts.mkfs !== false, mountpoint: opts.mountpoint, paths, fs: opts.filesystem ?? 'ext4' });
  }

  async view(lowers: LowerSpec[], opts: ViewOptions = {}): Promise<DeviceHandle> {
    if (lowers.length === 0) throw new ObdkitError('EINVAL', 'a view needs at least one lower layer');
    const vsize = await lowerStackVirtualSize(lowers, this.opts.remote);
    return this.start({ size: vsize, upper: null, lowers, mkfs: false, mountpoint: opts.mountpoint, fs: opts.filesystem ?? 'ext4' });
  }

  async commit(handle: DeviceHandle): Promise<PairPaths> {
    if (!handle.upper) throw new ObdkitError('EINVAL', 'commit of a read-only view', { file: handle.mountpoint });
    await this.stop(handle.id);
    return handle.upper;
  }

  async checkpoint(handle: DeviceHandle): Promise<number> {
    const d = this.live.get(handle.id);
    if (!d || !d.upper || !handle.upper) throw new ObdkitError('EINVAL', 'checkpoint of a device without a writable layer', { file: handle.mountpoint });
    if (!handle.mountpoint) throw new ObdkitError('EINVAL', 'checkpoint of a device without a filesystem', { file: handle.device });
    // Read-only first: the kernel writes every dirty block through the loop device (the FUSE workers
    // have recorded each one by the time the remount returns) and marks ext4 cleanly unmounted.
    await remountExt4(handle.mountpoint, { readOnly: true });
    try {
      new SharedUpper(d.upper).appendRecords();
      return indexFileSize(handle.upper);
    } finally {
      await remountExt4(handle.mountpoint, { readOnly: false });
    }
  }

  async remove(handle: DeviceHandle): Promise<void> {
    await this.stop(handle.id);
    if (handle.upper) {
      rmSync(handle.upper.data, { force: true });
      rmSync(handle.upper.index, { force: true });
    }
  }

  /** Tears down every device this instance serves. */
  async close(): Promise<void> {
    for (const id of [...this.live.keys()]) await this.stop(id);
  }

  private async start(a: {
    size: number;
    upper: SharedUpperState | null;
    lowers: LowerSpec[];
    writableDir?: string;
    mkfs: boolean;
    mountpoint: string | undefined;
    paths?: PairPaths;
    fs: 'ext4' | 'none';
  }): Promise<DeviceHandle> {
    const id = randomBytes(6).toString('hex');
    const dir = deviceDir(this.runDir, id);
    const fuseDir = join(dir, 'fuse');
    const mountpoint = a.fs === 'none' ? '' : (a.mountpoint ?? join(dir, 'mnt'));
    const state: DeviceState = {
      id,
      pid: process.pid,
      status: 'starting',
      fuseDir,
      mountpoint,
      lowers: a.lowers,
      createdAt: new Date().toISOString(),
    };
    if (a.writableDir) state.writableDir = a.writableDir;
    writeState(this.runDir, state);
    let exp: FuseExport | undefined;
    if (a.upper) openSharedFds(a.upper);
    // Lower files too are opened once for all worker threads (one readahead state per file).
    const lowerFds: number[] = [];
    const lowers = a.lowers.map((l) => {
      if (l.kind !== 'file') return l;
      const fd = openSync(l.path, 'r');
      lowerFds.push(fd);
      return { ...l, fd };
    });
    try {
      exp = await FuseExport.start({
        mountDir: fuseDir,
        device: { size: a.size, fileName: 'disk', upper: a.upper, lowers },
        ...(this.opts.workers !== undefined ? { workers: this.opts.workers } : {}),
        ...(this.opts.remote ? { remote: this.opts.remote } : {}),
      });
      const loop = await attachLoop(exp.diskPath, { readOnly: a.upper === null });
      state.loop = loop;
      writeState(this.runDir, state);
      if (a.fs === 'ext4') {
        if (a.mkfs) await mkfsExt4(loop);
        mkdirSync(mountpoint, { recursive: true });
        await mountExt4(loop, mountpoint, { readOnly: a.upper === null });
      }
      state.status = 'ready';
      writeState(this.runDir, state);
      const handle: DeviceHandle = { id, device: loop, mountpoint, writable: a.upper !== null };
      if (a.paths) handle.upper = a.paths;
      this.live.set(id, { handle, state, exp, upper: a.upper, lowerFds });
      return handle;
    } catch (err) {
      const e = exp;
      const target = { fuseDir, ...(mountpoint ? { mountpoint } : {}), ...(state.loop ? { loop: state.loop } : {}), ...(e ? { stopServer: () => e.stop() } : {}) };
      await teardown(target).catch(() => undefined);
      if (a.upper) closeSharedFds(a.upper);
      for (const fd of lowerFds) closeSync(fd);
      removeState(this.runDir, id);
      throw err;
    }
  }

  private async stop(id: string): Promise<void> {
    const d = this.live.get(id);
    if (!d) throw new ObdkitError('ENOENT', `no live device ${id}`);
    const target = { fuseDir: d.state.fuseDir, ...(d.handle.mountpoint ? { mountpoint: d.handle.mountpoint } : {}), stopServer: () => d.exp.stop() };
    await teardown(d.state.loop ? { ...target, loop: d.state.loop } : target);
    if (d.upper) closeSharedFds(d.upper);
    for (const fd of d.lowerFds) closeSync(fd);
    this.live.delete(id);
    removeState(this.runDir, id);
  }
}
