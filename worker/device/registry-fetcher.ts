// The main-thread RemoteFetcher for devices whose lowers are registry blobs: one RemoteBlob per
// blob (src/registry/remote-blob.ts), all of them filling one on-disk ChunkCache per cache dir, so
// only the chunks the filesystem actually touches cross the network, and a remount reads what an
// earlier mount already fetched from disk. Worker threads reach it through remote-channel.ts.
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
/** Below the worker's own wait (remote-channel.ts, 60 s), so the fetcher answers first. */
export const DEFAULT_FETCH_TIMEOUT_MS = 30_000;

/** Plain-data settings, as they travel in a daemon request. */
export interface RemoteFetchSettings {
  /** Cap of each chunk cache directory (the `dir` of the lowers). */
  cacheBytes?: number;
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

export class RegistryFetcher implements RemoteFetcher {
  private readonly client: RegistryClient;
  private readonly ownsClient: boolean;
  private readonly caches = new Map<string, Promise<ChunkCache>>();
  private readonly blobs = new Map<string, RemoteBlob>();
  private readonly blobSizes = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private readonly counts = { requests: 0, sharedRequests: 0, failures: 0 };
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
    const c: FetchCounters = { ...this.counts, servedBytes: 0, networkBytes: 0, networkRequests: 0, cacheHitBytes: 0, blobs: this.blobs.size, blobBytes: 0, imageBytes: this.imageBytes };
    for (const b of this.blobs.values()) {
      c.servedBytes += b.stats.servedBytes;
      c.networkBytes += b.stats.networkBytes;
      c.networkRequests += b.stats.networkRequests;
      c.cacheHitBytes += b.stats.cacheHitBytes;
    }
    for (const size of this.blobSizes.values()) c.blobBytes += size;
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
    log.info(this.counters(), 'registry reads');
    if (this.ownsClient) await this.client.close();
  }

  private async read(spec: RemoteLowerSpec, offset: number, length: number): Promise<Buffer> {
    const key = `${spec.repoBlobUrl}@${spec.digest}`;
    let blob = this.blobs.get(key);
    if (!blob) {
      const { ref } = parseRepoBlobUrl(spec.repoBlobUrl);
      const cache = await this.cacheFor(spec.dir);
      // Another read of the same blob may have created it while the cache was opening.
      blob = this.blobs.get(key) ?? new RemoteBlob(this.client, ref, spec.digest, { cache, size: spec.size });
      this.blobs.set(key, blob);
      this.blobSizes.set(key, spec.size);
    }
    return blob.read(offset, length);
  }

  private cacheFor(dir: string): Promise<ChunkCache> {
    let c = this.caches.get(dir);
    if (!c) {
      c = ChunkCache.open({ dir, capacityBytes: this.opts.cacheBytes ?? DEFAULT_CACHE_BYTES });
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
