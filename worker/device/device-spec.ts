// What a FUSE worker needs to serve the device, as plain data that crosses postMessage/workerData
// (SharedArrayBuffers inside it are shared, everything else copied). Built by fuse-export.ts,
// turned back into a BlockBackend by openBackend() in each worker.
import type { MessagePort } from 'node:worker_threads';
import { MergedBackend, type BlockBackend } from './backend.js';
import type { LowerSpec } from './lower-source.js';
import { openLowerStack } from './lower-stack.js';
import { channelLowerSource } from './remote-channel.js';
import { SharedUpper, type SharedUpperState } from './shared-upper.js';

export interface DeviceSpec {
  /** Bytes of the virtual disk. */
  size: number;
  /** Name of the one file in the FUSE mount. */
  fileName: string;
  /** Writable layer, or null for a read-only view. */
  upper: SharedUpperState | null;
  /** Bottom first. */
  lowers: LowerSpec[];
}

/** `port` carries remote-lower reads to the main thread (remote-channel.ts). */
export function openBackend(spec: DeviceSpec, port?: MessagePort): BlockBackend {
  const lower = spec.lowers.length > 0 ? openLowerStack(spec.lowers, channelLowerSource(port)) : null;
  const upper = spec.upper ? new SharedUpper(spec.upper) : null;
  return new MergedBackend(spec.size, upper, lower);
}
