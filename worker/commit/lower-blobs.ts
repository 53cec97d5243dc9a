// Opening sealed lower layer blobs (tar → ZFile → LSMT, detected by content) as one read-only
// LayerStack, for comparing a step's writes with what its lowers already show. A lower is a local
// file (a path, or a LowerSpec of kind 'file') or a registry blob (kind 'remote'), which the
// LowerSource opens; in the dedup worker that is remote-channel.ts's channel to the main thread's
// fetcher, so only the index and the ranges compared cross the network.
import type { RandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { LayerStack } from '../../src/overlaybd/stack.js';
import { localLowerSource, type LowerSource, type LowerSpec } from '../device/lower-source.js';

/** A lower as sealing takes it: a local blob path, or a device LowerSpec. */
export type SealLower = string | LowerSpec;

export function lowerSpecOf(l: SealLower): LowerSpec {
  return typeof l === 'string' ? { kind: 'file', path: l } : l;
}

/** Opens sealed lower blobs (bottom first) as a LayerStack (null for none), with a closer for the files. */
export function openLowerBlobs(lowers: readonly SealLower[], source: LowerSource = localLowerSource): { stack: LayerStack | null; close(): void } {
  const opened: (RandomAccess & { close?(): void })[] = [];
  const closeAll = (): void => {
    for (const f of opened.splice(0)) f.close?.();
  };
  try {
    const layers = lowers.map((l) => {
      const f = source.open(lowerSpecOf(l));
      opened.push(f);
      return openSealedLayer(unwrapLayerBlob(f).lsmt);
    });
    return { stack: layers.length ? new LayerStack(layers) : null, close: closeAll };
  } catch (err) {
    closeAll();
    throw err;
  }
}
