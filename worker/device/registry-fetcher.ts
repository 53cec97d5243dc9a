// The main-thread RemoteFetcher for devices whose lowers are registry blobs: one RemoteBlob per
// blob (src/registry/remote-blob.ts), all of them filling one on-disk ChunkCache per cache dir, so
// only the chunks the filesystem actually touches cross the network, and a remount reads what an
// earlier mount already fetched from disk. Worker threads reach it through remote-channel.ts.
// Device reads are small (one ZFile block, ~4 KiB, per request), so whole chunks are also kept in
// a small in-memory LRU, and a reader walking chunks in order gets the next few fetched ahead.
// Identical ranges requested while one is in flight share that one fetch, every fetch has a
// deadline (a dead registry becomes EIO for the reader, not a stuck block device), and counters
// can be written to a small JSON file that `obdkit mount`/`umount` read.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ChunkCache, RegistryClient, RemoteBlob, type ImageReference, type RegistryHostOptions } from '../../src/registry/index.js';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';
import type { LowerSpec } from './lower-source.js';
import type { RemoteFetcher, RemoteLowerSpec } from './remote-channel.js';

/** Cap of one chunk cache directory when nothing else is said. */
export const DEFAULT_CACHE_BYTES = 2 * 1024 ** 3;
/**
 * Fetch and cache unit. Smaller than the chunk cache's own default: a mount touches scattered
 * metadata, and sequential readers are served by read-ahead instead (bench/lazy.ts).
 */
export const DEFAULT_CHUNK_BYTES = 256 * 1024;
/** Chunks fetched ahead of a reader that moves from one chunk to the next. */
export const READ_AHEAD_CHUNKS = 16;
/** Whole chunks kept in memory. */
export const MEMORY_CHUNK_BYTES = 64 * 1024 * 1024;
/** Below the worker's own wait (remote-channel.ts, 60 s), so the fetcher answers first. */
export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;

/** Plain-data settings, as they travel in a daemon request. */
export interface RemoteFetchSettings {
  /** Cap of each chunk cache directory (the `dir` of the lowers). */
  cacheBytes?: number;
  /** Unit of fetching and caching (default DEFAULT_CHUNK_BYTES). */
  chunkBytes?: number;
  /** Deadline of one range fetch, retries included. */
  fetchTimeoutMs?: number;
  /** Where counters are kept up to date as JSON (FetchCounters). */
  statsFile?: string;
}

export interface RegistryFetcherOptions extends RemoteFetchSettings {
  /** Client to use; it stays open on close(). Default: one made for the hosts of the lowers. */
  client?: RegistryClient;
}

export interface FetchCounters {
  /** fetch() calls. */
  requests: number;
  /** Calls answered by an identical range already in flight. */
  sharedRequests: number;
  failures: number;
  /** Bytes returned to readers. */
  servedBytes: number;
  /** Bytes received from the registry. */
  networkBytes: number;
  /** HTTP range requests sent. */
  networkRequests: number;
  /** Bytes answered from the on-disk cache. */
  cacheHitBytes: number;
  /** Bytes answered from chunks held in memory. */
  memoryHitBytes: number;
  /** Chunks fetched ahead of a sequential reader. */
  readAheadChunks: number;
  /** Distinct blobs read so far, and the sum of their sizes. */
  blobs: number;
  blobBytes: number;
  /** Sum of the sizes of every blob this fetcher was set up for (the whole image). */
  imageBytes: number;
}

/** `scheme://host/v2/REPO/blobs`: how a lower names the repository its blob is read from. */
export function repoBlobUrl(client: RegistryClient, ref: ImageReference): string {
  return `${client.baseUrl(ref.host)}/v2/${ref.repository}/blobs`;
}

/** The reference and transport a repoBlobUrl stands for. */
export function parseRepoBlobUrl(url: string): { ref: ImageReference; insecure: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ObdkitError('EINVAL', `not a registry blob URL: ${JSON.stringify(url)}`, { ref: url });
  }
  const m = /^\/v2\/(.+)\/blobs\/?$/.exec(u.pathname);
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !m) {
    throw new ObdkitError('EINVAL', `registry blob URL must look like http(s)://HOST/v2/REPO/blobs, got ${JSON.stringify(url)}`, { ref: url });
  }
  return { ref: { registry: u.host, host: u.host, repository: m[1]! }, insecure: u.protocol === 'http:' };
}

interface OpenBlob {
  blob: RemoteBlob;
  size: number;
  chunkSize: number;
}

export class RegistryFetcher implements RemoteFetcher {
  private readonly client: RegistryClient;
  private readonly ownsClient: boolean;
  private readonly caches = new Map<string, Promise<ChunkCache>>();
  private readonly blobs = new Map<string, Promise<OpenBlob>>();
  private readonly opened: OpenBlob[] = [];
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /** Whole chunks by `blobKey#index`; insertion order is use order. */
  private readonly memory = new Map<string, Buffer>();
  private memoryBytes = 0;
  private readonly loading = new Map<string, Promise<Buffer>>();
  /** Chunks read ahead and not yet used. */
  private readonly aheadMarks = new Set<string>();
  private readonly counts = { requests: 0, sharedRequests: 0, failures: 0, servedBytes: 0, memoryHitBytes: 0, readAheadChunks: 0 };
  private readonly imageBytes: number;
  private statsTimer: NodeJS.Timeout | undefined;
  private closed = false;

  /**
   * `specs` are the lowers this fetcher will serve (for the image size in the counters, and, without
   * a client, for the hosts to talk to: plain http when their URL says http).
   */
  constructor(specs: readonly LowerSpec[], private readonly opts: RegistryFetcherOptions = {}) {
    const remote = specs.filter((s): s is RemoteLowerSpec => s.kind === 'remote');
    this.imageBytes = [...new Map(remote.map((s) => [s.digest, s.size])).values()].reduce((a, b) => a + b, 0);
    if (opts.client) {
      this.client = opts.client;
      this.ownsClient = false;
    } else {
      const hosts: Record<string, RegistryHostOptions> = {};
      for (const s of remote) {
        const { ref, insecure } = parseRepoBlobUrl(s.repoBlobUrl);
        hosts[ref.host] = { insecure };
      }
      this.client = new RegistryClient({ hosts });
      this.ownsClient = true;
    }
  }

  fetch(spec: RemoteLowerSpec, offset: number, length: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new ObdkitError('ECLOSED', 'registry fetcher is closed', { ref: spec.digest }));
    this.counts.requests++;
    const key = `${spec.repoBlobUrl}@${spec.digest}:${offset}:${length}`;
    const running = this.inflight.get(key);
    if (running) {
      this.counts.sharedRequests++;
      return running;
    }
    const p = this.withDeadline(this.read(spec, offset, length), spec, offset)
      .then((buf) => {
        this.counts.servedBytes += buf.length;
        return buf;
      })
      .catch((err: unknown) => {
        this.counts.failures++;
        if (this.counts.failures <= 10) {
          log.warn({ blob: spec.digest, offset, length, err: err instanceof Error ? err.message : String(err) }, 'registry read failed');
        }
        throw err;
      })
      .finally(() => {
        this.inflight.delete(key);
        this.scheduleStats();
      });
    this.inflight.set(key, p);
    return p;
  }

  counters(): FetchCounters {
    const c: FetchCounters = { ...this.counts, networkBytes: 0, networkRequests: 0, cacheHitBytes: 0, blobs: this.opened.length, blobBytes: 0, imageBytes: this.imageBytes };
    for (const o of this.opened) {
      c.networkBytes += o.blob.stats.networkBytes;
      c.networkRequests += o.blob.stats.networkRequests;
      c.cacheHitBytes += o.blob.stats.cacheHitBytes;
      c.blobBytes += o.size;
    }
    return c;
  }

  /** Writes the counters to the stats file now (if one was asked for). */
  flushStats(): void {
    if (this.statsTimer) clearTimeout(this.statsTimer);
    this.statsTimer = undefined;
    const file = this.opts.statsFile;
    if (!file) return;
    try {
      mkdirSync(dirname(file), { recursive: true });
      const tmp = `${file}.tmp`;
      writeFileSync(tmp, JSON.stringify(this.counters()));
      renameSync(tmp, file);
    } catch (err) {
      log.warn({ file, err: err instanceof Error ? err.message : String(err) }, 'cannot write fetch counters');
    }
  }

  /** Final counters to the stats file and the log; closes the client if this fetcher made it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.flushStats();
    const c = this.counters();
    // Worth a line only when something was read lazily; a build without registry lowers says nothing.
    if (c.requests > 0) log.info(c, 'registry reads');
    else log.debug(c, 'registry reads');
    this.memory.clear();
    if (this.ownsClient) await this.client.close();
  }

  private async read(spec: RemoteLowerSpec, offset: number, length: number): Promise<Buffer> {
    const blobKey = `${spec.repoBlobUrl}@${spec.digest}`;
    const o = await this.open(blobKey, spec);
    const end = Math.min(o.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const cs = o.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    // A sequential reader either misses right after a chunk it read, or reaches a chunk that was
    // read ahead for it (the marker, as in the kernel's async read-ahead): both extend the window.
    const firstKey = `${blobKey}#${first}`;
    const prevKey = `${blobKey}#${first - 1}`;
    const extendsRun = !this.memory.has(firstKey) && (this.memory.has(prevKey) || this.loading.has(prevKey));
    if (this.aheadMarks.delete(firstKey) || extendsRun) this.readAhead(blobKey, o, last);
    const parts: Promise<Buffer>[] = [];
    for (let i = first; i <= last; i++) {
      if (this.memory.has(`${blobKey}#${i}`)) this.counts.memoryHitBytes += Math.min(end, (i + 1) * cs) - Math.max(offset, i * cs);
      parts.push(this.chunk(blobKey, o, i));
    }
    const chunks = await Promise.all(parts);
    const out = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    const from = offset - first * cs;
    return out.subarray(from, from + (end - offset));
  }

  /** One whole chunk: from memory, or read through the RemoteBlob (disk cache, then network). */
  private chunk(blobKey: string, o: OpenBlob, index: number): Promise<Buffer> {
    const key = `${blobKey}#${index}`;
    const held = this.memory.get(key);
    if (held) {
      this.memory.delete(key);
      this.memory.set(key, held);
      return Promise.resolve(held);
    }
    let p = this.loading.get(key);
    if (!p) {
      p = o.blob.read(index * o.chunkSize, o.chunkSize).then((buf) => {
        this.remember(key, buf);
        return buf;
      });
      const tracked = p.finally(() => this.loading.delete(key));
      tracked.catch(() => undefined);
      this.loading.set(key, p);
    }
    return p;
  }

  /** Fetches the chunks after `last` that are not held or coming, one request per contiguous run. */
  private readAhead(blobKey: string, o: OpenBlob, last: number): void {
    const top = Math.min(Math.ceil(o.size / o.chunkSize) - 1, last + READ_AHEAD_CHUNKS);
    let i = last + 1;
    while (i <= top) {
      if (this.memory.has(`${blobKey}#${i}`) || this.loading.has(`${blobKey}#${i}`)) {
        i++;
        continue;
      }
      let j = i;
      while (j + 1 <= top && !this.memory.has(`${blobKey}#${j + 1}`) && !this.loading.has(`${blobKey}#${j + 1}`)) j++;
      const runFirst = i;
      const run = o.blob.read(runFirst * o.chunkSize, (j - runFirst + 1) * o.chunkSize);
      // A failed read-ahead is only a missed optimisation; the real read reports its own failure.
      run.catch(() => undefined);
      for (let k = i; k <= j; k++) {
        const key = `${blobKey}#${k}`;
        const p = run.then((buf) => {
          const chunk = buf.subarray((k - runFirst) * o.chunkSize, (k - runFirst + 1) * o.chunkSize);
          this.remember(key, chunk);
          return chunk;
        });
        p.catch(() => undefined);
        p.finally(() => this.loading.delete(key)).catch(() => undefined);
        this.loading.set(key, p);
        this.aheadMarks.add(key);
        this.counts.readAheadChunks++;
      }
      i = j + 1;
    }
  }

  private remember(key: string, buf: Buffer): void {
    if (this.closed) return;
    this.memory.set(key, buf);
    this.memoryBytes += buf.length;
    for (const [k, b] of this.memory) {
      if (this.memoryBytes <= MEMORY_CHUNK_BYTES) break;
      this.memory.delete(k);
      this.aheadMarks.delete(k);
      this.memoryBytes -= b.length;
    }
  }

  private open(blobKey: string, spec: RemoteLowerSpec): Promise<OpenBlob> {
    let p = this.blobs.get(blobKey);
    if (!p) {
      p = this.cacheFor(spec.dir).then((cache) => {
        const { ref } = parseRepoBlobUrl(spec.repoBlobUrl);
        const o: OpenBlob = { blob: new RemoteBlob(this.client, ref, spec.digest, { cache, size: spec.size }), size: spec.size, chunkSize: cache.chunkSize };
        this.opened.push(o);
        return o;
      });
      p.catch(() => this.blobs.delete(blobKey));
      this.blobs.set(blobKey, p);
    }
    return p;
  }

  private cacheFor(dir: string): Promise<ChunkCache> {
    let c = this.caches.get(dir);
    if (!c) {
      c = ChunkCache.open({ dir, capacityBytes: this.opts.cacheBytes ?? DEFAULT_CACHE_BYTES, chunkSize: this.opts.chunkBytes ?? DEFAULT_CHUNK_BYTES });
      // A cache that cannot open must not stay memoised as failed forever.
      c.catch(() => this.caches.delete(dir));
      this.caches.set(dir, c);
    }
    return c;
  }

  private withDeadline(p: Promise<Buffer>, spec: RemoteLowerSpec, offset: number): Promise<Buffer> {
    const ms = this.opts.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ObdkitError('ETIMEDOUT', `registry read not done within ${ms} ms`, { ref: spec.digest, offset })), ms);
    });
    return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
  }

  private scheduleStats(): void {
    if (!this.opts.statsFile || this.statsTimer || this.closed) return;
    // Coarse on purpose: a mount reads thousands of ranges, the file is for people and the CLI.
    this.statsTimer = setTimeout(() => this.flushStats(), 500);
    this.statsTimer.unref();
  }
}
