// The device layer in containerd's snapshotter verbs. Callers above worker/device see only this
// interface; FuseLoopSnapshotter (this machine: FUSE file + loop + ext4, served in-process) and
// TcmuSnapshotter (production: overlaybd-tcmu through configfs) implement it.
import type { LowerSpec } from './lower-source.js';
import type { PairPaths } from './rw-pair.js';

export const WRITABLE_DATA = 'writable_data';
export const WRITABLE_INDEX = 'writable_index';
export const DEFAULT_VIRTUAL_SIZE = 64 * 1024 ** 3;

export interface DeviceHandle {
  id: string;
  /** The block device node carrying the filesystem (/dev/loopN, /dev/sdX). */
  device: string;
  /** Where the filesystem is mounted ('' when exported without a filesystem). */
  mountpoint: string;
  writable: boolean;
  /** The RW pair receiving writes (prepare only). */
  upper?: PairPaths;
}

export interface PrepareOptions {
  /** Mount here instead of a directory under the run dir. */
  mountpoint?: string;
  /** Virtual size of a new disk with no lowers (default 64 GiB). */
  virtualSize?: number;
  /** mkfs a new disk that has no lowers (default true). */
  mkfs?: boolean;
  /** 'none' exports the raw block device only: no mkfs, no mount, empty `mountpoint`. */
  filesystem?: 'ext4' | 'none';
}

export interface ViewOptions {
  mountpoint?: string;
  filesystem?: 'ext4' | 'none';
}

export interface BlockSnapshotter {
  /** A writable device: lowers (bottom first) + the RW pair in `writableDir` (created, or reopened with recovery). */
  prepare(writableDir: string, lowers: LowerSpec[], opts?: PrepareOptions): Promise<DeviceHandle>;
  /** A read-only device over lowers. */
  view(lowers: LowerSpec[], opts?: ViewOptions): Promise<DeviceHandle>;
  /** Tears the device down and returns the RW pair, flushed and closed, for the commit step. */
  commit(handle: DeviceHandle): Promise<PairPaths>;
  /**
   * Optional (a device whose writable layer this process owns): makes the mounted filesystem's image
   * clean and complete on the device without tearing it down — remounted read-only, which writes
   * everything out and marks ext4 clean exactly as an unmount does, every completed write recorded in
   * the RW pair's index — then remounts it read-write. Returns the index file's size at that instant:
   * the records before it describe the clean image (rw-pair.ts `writeIndexSlice` cuts one step out).
   */
  checkpoint?(handle: DeviceHandle): Promise<number>;
  /** Tears the device down; a writable device's RW pair is deleted. */
  remove(handle: DeviceHandle): Promise<void>;
}

export function pairPaths(writableDir: string): PairPaths {
  return { data: `${writableDir}/${WRITABLE_DATA}`, index: `${writableDir}/${WRITABLE_INDEX}` };
}
