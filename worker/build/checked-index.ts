// The solver's cache index, checked against the content store on every hit: a cached result whose
// layer blobs (or tree directory) are gone — a layer read lazily from its registry counts as there — for instance after a store cleanup, is treated as a miss
// so the step runs again instead of failing later when a device opens a missing file.
import { existsSync } from 'node:fs';
import type { CacheIndex, CacheRecord } from '../../src/solver/cache-index.js';
import type { ContentStore } from '../../src/store/content-store.js';
import { layerAvailable } from './chain-lowers.js';
import type { BuildResult } from './result.js';

export class StoreCheckedIndex implements CacheIndex<BuildResult> {
  constructor(private readonly inner: CacheIndex<BuildResult>, private readonly store: ContentStore) {}

  async get(key: string): Promise<CacheRecord<BuildResult> | undefined> {
    const rec = await this.inner.get(key);
    if (!rec) return undefined;
    const r = rec.result;
    if (r.kind === 'layers' && !r.layers.every((l) => layerAvailable(this.store, l))) return undefined;
    if (r.kind === 'dir' && !existsSync(r.path)) return undefined;
    return rec;
  }

  put(record: CacheRecord<BuildResult>): Promise<void> {
    return this.inner.put(record);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
}
