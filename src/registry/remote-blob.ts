// Random access to a registry blob without downloading it: `read(offset, length)` turns into HTTP
// Range GETs. With a ChunkCache, reads are served in aligned chunks from disk, missing chunks are
// fetched in runs (one request per contiguous run), and a chunk already being fetched is awaited
// rather than fetched again; without a cache, identical in-flight ranges share one request. A
// redirect to a storage backend is remembered for a while and used directly (no Authorization).
// The block device reads through `ensureCached` + `readCachedSync` from its worker threads.
import { request } from 'undici';
import type { Readable } from 'node:stream';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import { parseDigest } from '../oci/digest.js';
import { header, type RegistryClient } from './client.js';
import { readCachedSync, type ChunkCache, type ChunkCacheLayout } from './chunk-cache.js';
import { headBlob } from './pull.js';
import type { ImageReference } from './reference.js';
import { backoff, isTransientNetworkError } from './retry.js';

export interface RemoteBlobOptions {
  cache?: ChunkCache;
  /** Blob size if known (from the descriptor); otherwise a HEAD asks the registry. */
  size?: number;
  /** Longest run of chunks fetched in one request (default 16). */
  maxRunChunks?: number;
  /** How long a storage redirect URL is reused (default 60 s). */
  redirectTtlMs?: number;
}

export interface RemoteBlobStats {
  /** Bytes received from the network. */
  networkBytes: number;
  /** Range requests sent. */
  networkRequests: number;
  /** Bytes returned by read(). */
  servedBytes: number;
  /** Bytes of read() answered from the disk cache. */
  cacheHitBytes: number;
}

export class RemoteBlob {
  readonly stats: RemoteBlobStats = { networkBytes: 0, networkRequests: 0, servedBytes: 0, cacheHitBytes: 0 };
  private knownSize: number | undefined;
  private readonly inflightRanges = new Map<string, Promise<Buffer>>();
  private direct: { url: URL; until: number } | undefined;
  private readonly name: string;

  constructor(
    private readonly client: RegistryClient,
    private readonly ref: ImageReference,
    readonly digest: string,
    private readonly opts: RemoteBlobOptions = {},
  ) {
    parseDigest(digest);
    this.knownSize = opts.size;
    this.name = `${ref.host}/${ref.repository}@${digest}`;
  }

  async size(): Promise<number> {
    if (this.knownSize === undefined) {
      const s = await headBlob(this.client, this.ref, this.digest);
      if (s === undefined || s < 0) {
        throw new ObdkitError('EREG_NOT_FOUND', `blob ${this.digest} not found (or no size) in ${this.ref.host}/${this.ref.repository}`, { ref: this.name });
      }
      this.knownSize = s;
    }
    return this.knownSize;
  }

  /** Where cached chunks of this blob live, for readCachedSync in another thread. */
  get cacheLayout(): (ChunkCacheLayout & { digest: string }) | undefined {
    return this.opts.cache ? { ...this.opts.cache.layout, digest: this.digest } : undefined;
  }

  /** Bytes [offset, offset+length), clipped at the blob's end. */
  async read(offset: number, length: number): Promise<Buffer> {
    const size = await this.size();
    this.checkRange(offset, length);
    const end = Math.min(size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const out = this.opts.cache ? await this.readViaCache(this.opts.cache, offset, end, size) : await this.readDirect(offset, end);
    this.stats.servedBytes += out.length;
    return out;
  }

  /** Makes sure every chunk of [offset, offset+length) is on disk (needs a cache). */
  async ensureCached(offset: number, length: number): Promise<void> {
    const cache = this.opts.cache;
    if (!cache) throw new ObdkitError('EUSAGE', 'ensureCached needs a RemoteBlob with a cache', { ref: this.name });
    const size = await this.size();
    this.checkRange(offset, length);
    const end = Math.min(size, offset + length);
    if (offset >= end) return;
    const cs = cache.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    const waits: Promise<unknown>[] = [];
    const missing: number[] = [];
    for (let i = first; i <= last; i++) {
      const p = cache.pending(this.digest, i);
      if (p) waits.push(p);
      else if (cache.has(this.digest, i)) cache.touch(this.digest, i);
      else missing.push(i);
    }
    for (const p of this.fetchChunks(cache, missing, size).values()) waits.push(p);
    await Promise.all(waits);
    for (let i = first; i <= last; i++) {
      if (!cache.has(this.digest, i)) {
        throw new ObdkitError('ECACHE_WRITE', `chunk ${i} could not be stored in the cache (disk full, or the cache cap is smaller than the working set?)`, { ref: this.name, offset: i * cs });
      }
    }
  }

  /** Blocking read of cached bytes (after ensureCached), as a worker thread would do it. */
  readCachedSync(offset: number, length: number): Buffer {
    const layout = this.cacheLayout;
    if (!layout) throw new ObdkitError('EUSAGE', 'readCachedSync needs a RemoteBlob with a cache', { ref: this.name });
    return readCachedSync(layout, this.digest, offset, length);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new ObdkitError('EUSAGE', `invalid range offset=${offset} length=${length}`, { ref: this.name });
    }
  }

  private async readViaCache(cache: ChunkCache, offset: number, end: number, size: number): Promise<Buffer> {
    const cs = cache.chunkSize;
    const first = Math.floor(offset / cs);
    const last = Math.floor((end - 1) / cs);
    const parts = new Map<number, Promise<Buffer>>();
    const missing: number[] = [];
    for (let i = first; i <= last; i++) {
      const p = cache.pending(this.digest, i);
      if (p) parts.set(i, p.then((chunk) => chunk.subarray(this.sliceStart(i, offset, cs), this.sliceEnd(i, end, cs))));
      else if (!cache.has(this.digest, i)) missing.push(i);
      else {
        const s = this.sliceStart(i, offset, cs);
        const e = this.sliceEnd(i, end, cs);
        parts.set(
          i,
          cache.read(this.digest, i, s, e - s).then(async (b) => {
            if (b) {
              this.stats.cacheHitBytes += b.length;
              return b;
            }
            // Evicted between the check and the read: fetch it again.
            const again = this.fetchChunks(cache, [i], size).get(i)!;
            return (await again).subarray(s, e);
          }),
        );
      }
    }
    for (const [i, p] of this.fetchChunks(cache, missing, size)) {
      parts.set(i, p.then((chunk) => chunk.subarray(this.sliceStart(i, offset, cs), this.sliceEnd(i, end, cs))));
    }
    const buffers: Buffer[] = [];
    for (let i = first; i <= last; i++) buffers.push(await parts.get(i)!);
    return buffers.length === 1 ? buffers[0]! : Buffer.concat(buffers);
  }

  private sliceStart(i: number, offset: number, cs: number): number {
    return Math.max(0, offset - i * cs);
  }

  private sliceEnd(i: number, end: number, cs: number): number {
    return Math.min(cs, end - i * cs);
  }

  /** Starts fetches for missing chunks, grouped into contiguous runs; each chunk resolves once stored. */
  private fetchChunks(cache: ChunkCache, missing: readonly number[], size: number): Map<number, Promise<Buffer>> {
    const out = new Map<number, Promise<Buffer>>();
    const cs = cache.chunkSize;
    const maxRun = Math.max(1, this.opts.maxRunChunks ?? 16);
    let k = 0;
    while (k < missing.length) {
      let j = k;
      while (j + 1 < missing.length && missing[j + 1] === missing[j]! + 1 && j + 1 - k < maxRun) j++;
      const firstChunk = missing[k]!;
      const lastChunk = missing[j]!;
      const start = firstChunk * cs;
      const run = this.fetchRange(start, Math.min(size, (lastChunk + 1) * cs));
      for (let i = firstChunk; i <= lastChunk; i++) {
        const p = run.then(async (buf) => {
          const chunk = buf.subarray(i * cs - start, Math.min(buf.length, (i + 1) * cs - start));
          // A full disk must not fail the read that already has its bytes; ensureCached checks presence itself.
          await cache.put(this.digest, i, chunk).catch((err: unknown) => log.warn({ blob: this.name, chunk: i, err: (err as Error).message }, 'cannot cache chunk'));
          return chunk;
        });
        out.set(i, cache.trackPending(this.digest, i, p));
      }
      k = j + 1;
    }
    return out;
  }

  private readDirect(offset: number, end: number): Promise<Buffer> {
    const key = `${offset}:${end}`;
    let p = this.inflightRanges.get(key);
    if (!p) {
      p = this.fetchRange(offset, end).finally(() => this.inflightRanges.delete(key));
      this.inflightRanges.set(key, p);
    }
    return p;
  }

  /** One ranged GET of [start, end), retried on transient failures (including a body cut short). */
  private async fetchRange(start: number, end: number): Promise<Buffer> {
    const attempts = this.client.retryPolicy.attempts;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.fetchRangeOnce(start, end);
      } catch (err) {
        this.direct = undefined;
        if (attempt >= attempts || !(isTransientNetworkError(err) || (err instanceof ObdkitError && err.code === 'EREG_SHORT_READ'))) throw err;
        log.debug({ blob: this.name, start, end, attempt, err: (err as Error).message }, 'range read failed, retrying');
        await backoff(attempt, this.client.retryPolicy);
      }
    }
  }

  private async fetchRangeOnce(start: number, end: number): Promise<Buffer> {
    const range = `bytes=${start}-${end - 1}`;
    this.stats.networkRequests++;
    let body: Readable;
    let status: number;
    let contentRange: string | undefined;
    const direct = this.direct && this.direct.until > Date.now() ? this.direct.url : undefined;
    if (direct) {
      const r = await request(direct, { method: 'GET', headers: { range }, dispatcher: this.client.dispatcherFor(direct.host) });
      if (r.statusCode !== 206 && r.statusCode !== 200) {
        // The pre-signed URL expired or was refused: go back through the registry.
        await r.body.dump();
        this.direct = undefined;
        return this.fetchRangeOnce(start, end);
      }
      body = r.body;
      status = r.statusCode;
      const cr = r.headers['content-range'];
      contentRange = Array.isArray(cr) ? cr[0] : cr;
    } else {
      const r = await this.client.send({
        ref: this.ref,
        method: 'GET',
        target: `/v2/${this.ref.repository}/blobs/${this.digest}`,
        headers: { range },
        actions: ['pull'],
        op: `read blob ${this.digest} ${range}`,
      });
      if (r.crossHost) this.direct = { url: r.url, until: Date.now() + (this.opts.redirectTtlMs ?? 60_000) };
      body = r.body;
      status = r.status;
      contentRange = header(r.headers, 'content-range');
    }
    let skip = 0;
    if (status === 206) {
      const m = contentRange ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange) : null;
      if (!m || Number(m[1]) !== start) {
        body.destroy();
        throw new ObdkitError('EREG_PROTOCOL', `range reply ${JSON.stringify(contentRange)} does not start at ${start}`, { ref: this.name, offset: start });
      }
    } else {
      // The server ignored Range and sent the whole blob: skip to the start.
      skip = start;
    }
    const want = end - start;
    const out = Buffer.allocUnsafe(want);
    let got = 0;
    for await (const chunk of body) {
      let b = chunk as Buffer;
      this.stats.networkBytes += b.length;
      if (skip > 0) {
        if (b.length <= skip) {
          skip -= b.length;
          continue;
        }
        b = b.subarray(skip);
        skip = 0;
      }
      const n = Math.min(b.length, want - got);
      b.copy(out, got, 0, n);
      got += n;
      // A whole-blob 200 is cut off here; a 206 is read to its end so the connection can be reused.
      if (got === want && status !== 206) {
        body.destroy();
        break;
      }
    }
    if (got !== want) {
      throw new ObdkitError('EREG_SHORT_READ', `range read returned ${got} of ${want} bytes`, { ref: this.name, offset: start + got });
    }
    return out;
  }
}
