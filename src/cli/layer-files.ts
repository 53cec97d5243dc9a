// Opening layer files named on the command line: a blob (plain LSMT, ZFile or tar-wrapped, detected by
// content) becomes a SealedLayer; a writable pair becomes a RwLayer. Shared by `layer *` and `mount`.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FileRandomAccess } from '../overlaybd/io.js';
import { unwrapLayerBlob, type UnwrappedLayer } from '../overlaybd/layer-open.js';
import { openSealedLayer, type SealedLayer } from '../overlaybd/lsmt-file.js';
import { ObdkitError } from '../util/errors.js';

export interface OpenedBlob {
  file: FileRandomAccess;
  unwrapped: UnwrappedLayer;
  layer: SealedLayer;
}

export function openBlob(path: string): OpenedBlob {
  if (!existsSync(path)) throw new ObdkitError('ENOENT', 'no such file', { file: path });
  if (!statSync(path).isFile()) throw new ObdkitError('EUSAGE', 'not a regular file', { file: path });
  const file = new FileRandomAccess(path);
  try {
    const unwrapped = unwrapLayerBlob(file);
    const layer = openSealedLayer(unwrapped.lsmt);
    return { file, unwrapped, layer };
  } catch (err) {
    file.close();
    throw err;
  }
}

/** Names of the writable pair inside a writable directory (the same names overlaybd-snapshotter uses). */
export const WRITABLE_DATA = 'writable_data';
export const WRITABLE_INDEX = 'writable_index';

/** `DATA INDEX` or a writable directory holding `writable_data` + `writable_index`. */
export function resolvePair(data: string, index: string | undefined): { data: string; index: string } {
  if (index !== undefined) return { data, index };
  if (existsSync(data) && statSync(data).isDirectory()) {
    return { data: join(data, WRITABLE_DATA), index: join(data, WRITABLE_INDEX) };
  }
  throw new ObdkitError('EUSAGE', 'expected DATA INDEX, or a writable directory', { file: data });
}
