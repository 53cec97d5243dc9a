// Where the read-only layers of a device come from. A LowerSpec is plain data (it crosses into
// worker threads); a LowerSource turns it into a synchronous RandomAccess over the layer blob as
// stored (tar/ZFile/LSMT, unwrapped later). Local files are read directly by each worker; a remote
// blob will be a RandomAccess whose misses are fetched by the main thread (the worker posts the range
// and waits on a SharedArrayBuffer), which is why this seam is synchronous. lower-stack.ts stacks the
// unwrapped layers into one LowerView.
import { FileRandomAccess, type RandomAccess } from '../../src/overlaybd/io.js';
import { ObdkitError } from '../../src/util/errors.js';

export type LowerSpec =
  /** `fd`: a descriptor the device opened once for all its threads (shared readahead); not closed by readers. */
  | { kind: 'file'; path: string; fd?: number }
  /** Reserved for registry blobs: identified by digest, cached under `dir`. */
  | { kind: 'remote'; digest: string; size: number; dir: string; repoBlobUrl: string };

export interface LowerSource {
  open(spec: LowerSpec): RandomAccess & { close?(): void };
}

export const localLowerSource: LowerSource = {
  open(spec) {
    if (spec.kind !== 'file') {
      throw new ObdkitError('ENOTSUP', 'remote lower layers need a fetcher (remote-channel.ts)', { ref: spec.digest });
    }
    return openLocalLower(spec);
  },
};

/** A local layer file; with a shared descriptor the result has no close(), its owner closes it. */
export function openLocalLower(spec: Extract<LowerSpec, { kind: 'file' }>): RandomAccess & { close?(): void } {
  if (spec.fd === undefined) return new FileRandomAccess(spec.path);
  const f = new FileRandomAccess(spec.path, spec.fd);
  return { size: f.size, name: f.name, pread: (offset, length) => f.pread(offset, length) };
}

/** The merged read-only stack below the writable layer. */
export interface LowerView {
  /** Virtual size of the stack (topmost non-zero), bytes. */
  readonly virtualSize: number;
  /** Reads [offset, offset+length), 512-aligned; unmapped sectors read as zeros. */
  read(offset: number, length: number): Buffer;
  close(): void;
}
