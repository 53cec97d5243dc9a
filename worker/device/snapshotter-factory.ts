// Chooses the device export by configuration (`--device fuse|tcmu`), so code above worker/device
// holds a BlockSnapshotter and never knows which export serves it.
import { ObdkitError } from '../../src/util/errors.js';
import { join } from 'node:path';
import { FuseLoopSnapshotter } from './fuse-loop-snapshotter.js';
import type { RemoteFetcher } from './remote-channel.js';
import type { BlockSnapshotter } from './snapshotter.js';
import { TcmuSnapshotter } from './tcmu-snapshotter.js';

export type DeviceKind = 'fuse' | 'tcmu';

export interface SnapshotterConfig {
  device: DeviceKind;
  runDir: string;
  /** FUSE export only. */
  workers?: number;
  remote?: RemoteFetcher;
  /** TCMU export only: roots of configfs and sysfs. */
  configfsRoot?: string;
  sysRoot?: string;
}

export function createSnapshotter(c: SnapshotterConfig): BlockSnapshotter & { close?(): Promise<void> } {
  if (c.device === 'fuse') {
    return new FuseLoopSnapshotter({
      runDir: c.runDir,
      ...(c.workers !== undefined ? { workers: c.workers } : {}),
      ...(c.remote ? { remote: c.remote } : {}),
    });
  }
  if (c.device === 'tcmu') {
    return new TcmuSnapshotter({
      stateDir: join(c.runDir, 'tcmu'),
      ...(c.configfsRoot ? { configfsRoot: c.configfsRoot } : {}),
      ...(c.sysRoot ? { sysRoot: c.sysRoot } : {}),
    });
  }
  throw new ObdkitError('EINVAL', `unknown device export "${String(c.device)}" (fuse or tcmu)`);
}
