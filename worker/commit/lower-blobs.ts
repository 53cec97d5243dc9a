// Opening sealed layer blobs from the content store (tar → ZFile → LSMT, detected by content) as one
// read-only LayerStack, for comparing a step's writes with what its lowers already show.
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { openSealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { LayerStack } from '../../src/overlaybd/stack.js';

/** Opens sealed lower blobs (bottom first) as a LayerStack (null for none), with a closer for the files. */
export function openLowerBlobs(paths: readonly string[]): { stack: LayerStack | null; close(): void } {
  const files: FileRandomAccess[] = [];
  try {
    const layers = paths.map((p) => {
      const f = new FileRandomAccess(p);
      files.push(f);
      return openSealedLayer(unwrapLayerBlob(f).lsmt);
    });
    return { stack: layers.length ? new LayerStack(layers) : null, close: () => files.forEach((f) => f.close()) };
  } catch (err) {
    files.forEach((f) => f.close());
    throw err;
  }
}
