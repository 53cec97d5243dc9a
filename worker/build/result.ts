// What a solved vertex is, as the executor hands it to the solver (and the solver keeps in its cache
// index, so every field is plain JSON and points only at lasting things: blobs in the content store,
// directories under the store root, or a named build context).
//  - layers: an overlaybd layer chain (bottom first). `steps` has one flag per exec/file step since
//    the source image, true when the step left a layer: the image history's empty_layer marks come
//    from it.
//  - local:  a build context, read through the ContextProvider when a step needs it.
//  - dir:    a small tree under the store root (an inline file, a downloaded URL).
import type { LayerRecord } from '../../src/store/layer-record.js';

export interface LayersResult {
  kind: 'layers';
  layers: LayerRecord[];
  steps: boolean[];
  /**
   * Steps whose layers are still being sealed in the background, bottom first, above `layers`
   * (step-device.ts). Only in the early results one step hands the next within a build; never in
   * what the cache index stores (the executor's settle() replaces it with the sealed layers).
   */
  unsealed?: string[];
}

export interface LocalResult {
  kind: 'local';
  name: string;
  excludes: string[];
}

export interface DirResult {
  kind: 'dir';
  path: string;
}

export type BuildResult = LayersResult | LocalResult | DirResult;

export function isLayersResult(r: BuildResult | undefined): r is LayersResult {
  return r !== undefined && r.kind === 'layers';
}
