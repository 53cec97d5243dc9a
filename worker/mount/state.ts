// Records of live devices under the run directory, so that another process (`obdkit umount`, or
// the next start after a crash) can find and tear down what a daemon set up:
// <runDir>/devices/<id>/state.json + <runDir>/devices/<id>/fuse (the FUSE mount of the image file).
import { mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LowerSpec } from '../device/lower-source.js';

export const DEFAULT_RUN_DIR = process.env.OBDKIT_RUN_DIR ?? '/run/obdkit';

export interface DeviceState {
  id: string;
  /** Process serving the FUSE mount. */
  pid: number;
  status: 'starting' | 'ready' | 'failed';
  error?: string;
  fuseDir: string;
  loop?: string;
  mountpoint: string;
  writableDir?: string;
  lowers: LowerSpec[];
  createdAt: string;
}

export function devicesDir(runDir: string): string {
  return join(runDir, 'devices');
}

export function deviceDir(runDir: string, id: string): string {
  return join(devicesDir(runDir), id);
}

export function writeState(runDir: string, s: DeviceState): void {
  const dir = deviceDir(runDir, s.id);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, 'state.json.tmp');
  writeFileSync(tmp, JSON.stringify(s, null, 2));
  renameSync(tmp, join(dir, 'state.json'));
}

export function readState(runDir: string, id: string): DeviceState | null {
  try {
    return JSON.parse(readFileSync(join(deviceDir(runDir, id), 'state.json'), 'utf8')) as DeviceState;
  } catch {
    return null;
  }
}

export function listDeviceIds(runDir: string): string[] {
  try {
    return readdirSync(devicesDir(runDir));
  } catch {
    return [];
  }
}

/**
 * Removes a device's record and its (empty) directories. Never recursive: a directory that is
 * still a mountpoint must not be emptied through the mount.
 */
export function removeState(runDir: string, id: string): void {
  const dir = deviceDir(runDir, id);
  for (const f of ['state.json', 'state.json.tmp', 'daemon.log', 'request.json']) rmSync(join(dir, f), { force: true });
  for (const d of ['fuse', 'mnt', '']) {
    try {
      rmdirSync(join(dir, d));
    } catch {
      // busy or not empty: left for the next cleanup
    }
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
