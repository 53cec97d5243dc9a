// What a FUSE worker needs to serve the device, as plain data that crosses postMessage/workerData
// (SharedArrayBuffers inside it are shared, everything else copied). Built by fuse-export.ts,
// turned back into a BlockBackend by openBackend() in each worker.
import { MergedBackend, type BlockBackend } from './backend.js';
import { localLowerSource, type LowerSpec } from './lower-source.js';
import { openLowerStack } from './lower-stack.js';
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

export function openBackend(spec: DeviceSpec): BlockBackend {
  const lower = spec.lowers.length > 0 ? openLowerStack(spec.lowers, localLowerSource) : null;
  const upper = spec.upper ? new SharedUpper(spec.upper) : null;
  return new MergedBackend(spec.size, upper, lower);
}
