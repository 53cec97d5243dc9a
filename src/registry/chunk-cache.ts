// The persistent on-disk cache of remote blob bytes, in aligned chunks (1 MiB by default): one file
// per chunk at `<dir>/c<chunkSize>/<algo>-<hex>/<index>`. A chunk is written to a temp name and
// renamed into place, so a chunk file that exists is always complete — across crashes and restarts
// too; the directory tree is the index. Least-recently-used chunks are deleted when the total
// passes the cap; use times live in memory and are saved lazily as file mtimes so the LRU order
// survives a restart. Chunks used in the last `graceMs` are never evicted, which gives a worker
// thread time to `readSync` what the main thread just ensured (see readCachedSync and
// CachedChunkReader).
// One process owns a cache directory at a time. remote-blob.ts fills it.
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { digestFileName } from '../oci/digest.js';

export const DEFAULT_CHUNK_SIZE = 1 << 20;

export interface ChunkCacheOptions {
  dir: string;
  /** Upper bound of cached bytes; least recently used chunks go first. */
  capacityBytes: number;
  chunkSize?: number;
  /** Chunks used this recently are kept even over the cap (default 10 s). */
  graceMs?: number;
}

/** What a worker thread needs to read cached chunks itself. */
export interface ChunkCacheLayout {
  root: string;
  chunkSize: number;
}

interface Entry {
  size: number;
  lastUse: number;
  savedUse: number;
}

export function chunkFilePath(layout: ChunkCacheLayout, digest: string, index: number): string {
  return join(layout.root, digestFileName(digest), String(index));
}

/**
 * Reads [offset, offset+length) of a blob from cache files with blocking reads, for worker threads.
 * Every chunk touched must be cached (call RemoteBlob.ensureCached first); a missing one throws.
 */
export function readCachedSync(layout: ChunkCacheLayout, digest: string, offset: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const pos = offset + done;
    const index = Math.floor(pos / layout.chunkSize);
    const inChunk = pos - index * layout.chunkSize;
    const path = chunkFilePath(layout, digest, index);
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new ObdkitError('ECACHE_MISS', `chunk ${index} of ${digest} is not cached`, { file: path, offset: pos }, { cause: err });
    }
    try {
      const want = Math.min(length - done, layout.chunkSize - inChunk);
      const avail = fstatSync(fd).size - inChunk;
      if (avail < want) throw new ObdkitError('ECACHE_MISS', `chunk ${index} of ${digest} ends before the requested range`, { file: path, offset: pos });
      let got = 0;
      while (got < want) {
        const n = readSync(fd, out, done + got, want - got, inChunk + got);
        if (n === 0) throw new ObdkitError('ECACHE_MISS', `short read in cached chunk`, { file: path, offset: inChunk + got });
        got += n;
      }
      done += want;
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/**
 * readCachedSync with open chunk files kept in a small LRU, for a worker thread serving many small
 * reads. Keeping a file open past its eviction is harmless: chunks of a digest never change, and the
 * space comes back when the descriptor is closed (at most `maxOpen` of them).
 */
export class CachedChunkReader {
  private readonly fds = new Map<string, number>();

  constructor(private readonly layout: ChunkCacheLayout, private readonly maxOpen = 64) {}

  readSync(digest: string, offset: number, length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const index = Math.floor(pos / this.layout.chunkSize);
      const inChunk = pos - index * this.layout.chunkSize;
      const want = Math.min(length - done, this.layout.chunkSize - inChunk);
      const fd = this.fd(digest, index, pos);
      let got = 0;
      while (got < want) {
        const n = readSync(fd, out, done + got, want - got, inChunk + got);
        if (n === 0) {
          throw new ObdkitError('ECACHE_MISS', `chunk ${index} of ${digest} ends before the requested range`, { file: chunkFilePath(this.layout, digest, index), offset: pos + got });
        }
        got += n;
      }
      done += want;
    }
    return out;
  }

  private fd(digest: string, index: number, pos: number): number {
    const path = chunkFilePath(this.layout, digest, index);
    const cached = this.fds.get(path);
    if (cached !== undefined) {
      this.fds.delete(path);
      this.fds.set(path, cached);
      return cached;
    }
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new ObdkitError('ECACHE_MISS', `chunk ${index} of ${digest} is not cached`, { file: path, offset: pos }, { cause: err });
    }
    this.fds.set(path, fd);
    if (this.fds.size > this.maxOpen) {
      const [oldPath, oldFd] = this.fds.entries().next().value as [string, number];
      this.fds.delete(oldPath);
      closeSync(oldFd);
    }
    return fd;
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

export class ChunkCache implements ChunkCacheLayout {
  readonly root: string;
  readonly chunkSize: number;
  readonly capacityBytes: number;
  private readonly graceMs: number;
  /** Insertion order is use order: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly dirsMade = new Set<string>();
  /** Chunks being fetched right now, shared by every RemoteBlob on this cache. */
  private readonly fetching = new Map<string, Promise<Buffer>>();
  private total = 0;

  private constructor(opts: ChunkCacheOptions) {
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.root = join(opts.dir, `c${this.chunkSize}`);
    this.capacityBytes = opts.capacityBytes;
    this.graceMs = opts.graceMs ?? 10_000;
  }

  /** Opens (creating if needed) a cache directory and loads what a previous run left in it. */
  static async open(opts: ChunkCacheOptions): Promise<ChunkCache> {
    const c = new ChunkCache(opts);
    await mkdir(c.root, { recursive: true });
    await c.scan();
    await c.evict();
    return c;
  }

  get usedBytes(): number {
    return this.total;
  }

  get layout(): ChunkCacheLayout {
    return { root: this.root, chunkSize: this.chunkSize };
  }

  private async scan(): Promise<void> {
    const found: { key: string; size: number; mtime: number }[] = [];
    for (const blobDir of await readdir(this.root)) {
      const dirPath = join(this.root, blobDir);
      let names: string[];
      try {
        names = await readdir(dirPath);
      } catch {
        continue;
      }
      this.dirsMade.add(blobDir);
      for (const name of names) {
        const p = join(dirPath, name);
        if (!/^\d+$/.test(name)) {
          // A temp file from a write that never finished.
          await rm(p, { force: true });
          continue;
        }
        const st = await stat(p).catch(() => undefined);
        if (st?.isFile()) found.push({ key: `${blobDir}/${name}`, size: st.size, mtime: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      this.entries.set(f.key, { size: f.size, lastUse: f.mtime, savedUse: f.mtime });
      this.total += f.size;
    }
  }

  private key(digest: string, index: number): string {
    return `${digestFileName(digest)}/${index}`;
  }

  /** The fetch in progress for a chunk, if any. */
  pending(digest: string, index: number): Promise<Buffer> | undefined {
    return this.fetching.get(this.key(digest, index));
  }

  /** Registers a fetch of a chunk so concurrent readers wait for it instead of fetching again. */
  trackPending(digest: string, index: number, p: Promise<Buffer>): Promise<Buffer> {
    const key = this.key(digest, index);
    const tracked = p.finally(() => {
      if (this.fetching.get(key) === tracked) this.fetching.delete(key);
    });
    // Failures reach callers through the returned promise; the tracking copy must not be unhandled.
    tracked.catch(() => undefined);
    this.fetching.set(key, tracked);
    return tracked;
  }

  has(digest: string, index: number): boolean {
    return this.entries.has(this.key(digest, index));
  }

  path(digest: string, index: number): string {
    return chunkFilePath(this, digest, index);
  }

  /** Marks a chunk used now (moves it to the back of the LRU order). */
  touch(digest: string, index: number): void {
    const key = this.key(digest, index);
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    e.lastUse = Date.now();
    this.entries.set(key, e);
    // Persist use times coarsely: one utimes per chunk per minute at most.
    if (e.lastUse - e.savedUse > 60_000) {
      e.savedUse = e.lastUse;
      const t = new Date(e.lastUse);
      utimes(this.path(digest, index), t, t).catch(() => undefined);
    }
  }

  /** Stores a complete chunk. The chunk becomes visible only once fully written. */
  async put(digest: string, index: number, data: Buffer): Promise<void> {
    const key = this.key(digest, index);
    if (this.entries.has(key)) {
      this.touch(digest, index);
      return;
    }
    const dirName = digestFileName(digest);
    if (!this.dirsMade.has(dirName)) {
      await mkdir(join(this.root, dirName), { recursive: true });
      this.dirsMade.add(dirName);
    }
    const final = this.path(digest, index);
    const tmp = `${final}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
    try {
      await writeFile(tmp, data);
      await rename(tmp, final);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new ObdkitError('ECACHE_WRITE', `cannot write cache chunk: ${(err as Error).message}`, { file: final }, { cause: err });
    }
    const now = Date.now();
    const previous = this.entries.get(key);
    if (previous) this.total -= previous.size;
    this.entries.set(key, { size: data.length, lastUse: now, savedUse: now });
    this.total += data.length;
    await this.evict();
  }

  /** Reads part of a cached chunk; undefined if it is not (or no longer) cached. */
  async read(digest: string, index: number, start: number, length: number): Promise<Buffer | undefined> {
    if (!this.has(digest, index)) return undefined;
    const p = this.path(digest, index);
    let fh;
    try {
      fh = await open(p, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        this.forget(this.key(digest, index));
        return undefined;
      }
      throw err;
    }
    try {
      const out = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(out, got, length - got, start + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got < length) {
        throw new ObdkitError('ECACHE_CORRUPT', `cached chunk is shorter than expected (${start + got} < ${start + length})`, { file: p, offset: start + got });
      }
      this.touch(digest, index);
      return out;
    } finally {
      await fh.close();
    }
  }

  private forget(key: string): void {
    const e = this.entries.get(key);
    if (e) {
      this.total -= e.size;
      this.entries.delete(key);
    }
  }

  /** Deletes least recently used chunks until the total fits the cap (chunks within the grace period stay). */
  private async evict(): Promise<void> {
    if (this.total <= this.capacityBytes) return;
    const cutoff = Date.now() - this.graceMs;
    const victims: string[] = [];
    for (const [key, e] of this.entries) {
      if (this.total <= this.capacityBytes) break;
      if (e.lastUse > cutoff) continue;
      victims.push(key);
      this.forget(key);
    }
    await Promise.all(victims.map((k) => unlink(join(this.root, k)).catch(() => undefined)));
  }
}
