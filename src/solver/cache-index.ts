// The local cache index: cache key -> result record, one small JSON file per key under a state root
// (`<root>/cache-index/<2 hex>/<64 hex>.json`). Each write goes to a temporary file that is renamed into
// place, so readers (other solves, other processes) see either nothing or a whole record. Records are opaque
// here: the worker decides what a result is (layer digest chain, config, ...). `MemoryCacheIndex` serves
// solvers that run without a state root.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { log } from '../util/log.js';

export interface CacheRecord<R> {
  key: string;
  /** Vertex name when the record was made; for humans inspecting the index. */
  name?: string;
  createdAt: string;
  result: R;
}

export interface CacheIndex<R> {
  get(key: string): Promise<CacheRecord<R> | undefined>;
  put(record: CacheRecord<R>): Promise<void>;
  delete(key: string): Promise<void>;
}

export class MemoryCacheIndex<R> implements CacheIndex<R> {
  private readonly records = new Map<string, CacheRecord<R>>();
  async get(key: string): Promise<CacheRecord<R> | undefined> {
    return this.records.get(key);
  }
  async put(record: CacheRecord<R>): Promise<void> {
    this.records.set(record.key, record);
  }
  async delete(key: string): Promise<void> {
    this.records.delete(key);
  }
}

export class FileCacheIndex<R> implements CacheIndex<R> {
  readonly dir: string;

  constructor(stateRoot: string) {
    this.dir = join(stateRoot, 'cache-index');
  }

  private pathFor(key: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(key);
    if (!m) throw new ObdkitError('ECACHEKEY', `malformed cache key ${JSON.stringify(key)}`);
    const hex = m[1]!;
    return join(this.dir, hex.slice(0, 2), `${hex}.json`);
  }

  async get(key: string): Promise<CacheRecord<R> | undefined> {
    const file = this.pathFor(key);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const rec = JSON.parse(text) as CacheRecord<R>;
      if (rec.key !== key) throw new Error(`record holds key ${rec.key}`);
      return rec;
    } catch (err) {
      // A damaged record is a miss, not a failed build: the step runs again and rewrites it.
      log.warn({ file, err: (err as Error).message }, 'ignoring unreadable cache record');
      return undefined;
    }
  }

  async put(record: CacheRecord<R>): Promise<void> {
    const file = this.pathFor(record.key);
    await mkdir(join(file, '..'), { recursive: true });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(record) + '\n');
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathFor(key), { force: true });
  }
}
