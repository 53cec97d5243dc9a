// Registry reads of remote lower layers served by a thread of their own, so that no device read ever
// waits for the main thread. A build step's main thread touches the mounted rootfs with synchronous
// calls (user database, mount stubs); if the device's remote reads were answered by that same thread
// (remote-channel.ts `serveRemoteReads` on the main thread), each such call would stall until the
// device worker's deadline. Here one worker thread owns the RegistryFetcher (its chunk cache, its
// registry client), and every reader gets a MessagePort answered there:
//  - `connect()` hands out a port for a device or dedup worker (remote-channel.ts `ChannelRandomAccess`
//    on the other end);
//  - `fetch()` serves main-thread callers through the same protocol, waiting with Atomics.waitAsync.
// Credentials stay on the main thread (a BuildKit session's provider cannot move): the fetch thread
// asks for them when a registry challenges and keeps the answer for a while, and when the main thread
// is busy past a short wait it reuses the answer it had, so a blocked main thread delays nothing.
import { MessageChannel, Worker, isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { RegistryClient, type RegistryHostOptions } from '../../src/registry/client.js';
import type { CredentialProvider, Credentials } from '../../src/registry/credentials.js';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';
import { RegistryFetcher, type FetchCounters, type RemoteFetchSettings } from '../device/registry-fetcher.js';
import { serveRemoteReads, type RemoteFetcher, type RemoteLowerSpec } from '../device/remote-channel.js';

const MARKER = 'obdkit-fetch-thread';
/** How long an answer about credentials is used before the main thread is asked again. */
const CREDENTIALS_TTL_MS = 5 * 60_000;
/** How long the fetch thread waits for the main thread before it reuses an older answer. */
const CREDENTIALS_WAIT_MS = 2_000;
/** A main-thread fetch() waits this long at most (the fetcher has its own, shorter deadline). */
const FETCH_WAIT_MS = 60_000;

/** Atomics.waitAsync (Node 16+; not yet in this project's TypeScript lib). */
type WaitAsync = (ta: Int32Array, index: number, value: number, timeoutMs: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync: WaitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

export interface ThreadedFetcherOptions {
  /** Per-registry settings (plain data: they are copied to the thread). */
  hosts?: Record<string, RegistryHostOptions>;
  /** Asked on the main thread first; the Docker config file (read in the thread) next. */
  credentials?: CredentialProvider;
  settings?: RemoteFetchSettings;
}

interface ThreadInit {
  [MARKER]: true;
  hosts: Record<string, RegistryHostOptions>;
  settings: RemoteFetchSettings;
  control: MessagePort;
}

type ToThread =
  | { type: 'serve'; port: MessagePort }
  | { type: 'counters'; id: number }
  | { type: 'close'; id: number }
  | { type: 'credentials'; id: number; credentials: Credentials | null };

type FromThread =
  | { type: 'credentials'; id: number; host: string }
  | { type: 'counters'; id: number; counters: FetchCounters }
  | { type: 'closed'; id: number };

/** The RemoteFetcher whose reads are served by a worker thread; see the top of this file. */
export class ThreadedRegistryFetcher implements RemoteFetcher {
  private worker: Worker | undefined;
  private control: MessagePort | undefined;
  /** Main-thread end of the channel fetch() uses. */
  private own: MessagePort | undefined;
  private nextId = 1;
  private readonly waiting = new Map<number, (m: FromThread) => void>();
  /** Main-thread calls in flight: while there are any, the thread keeps the process alive. */
  private busy = 0;
  private closed = false;

  constructor(private readonly opts: ThreadedFetcherOptions = {}) {}

  /** A port whose range requests (remote-channel.ts protocol) are answered by the fetch thread. */
  connect(): MessagePort {
    const ch = new MessageChannel();
    this.post({ type: 'serve', port: ch.port1 }, [ch.port1]);
    return ch.port2;
  }

  async fetch(spec: RemoteLowerSpec, offset: number, length: number): Promise<Buffer> {
    if (length <= 0) return Buffer.alloc(0);
    this.own ??= this.connect();
    // The reply layout of remote-channel.ts: state, byte count, then the bytes.
    const reply = new SharedArrayBuffer(8 + length);
    const ctl = new Int32Array(reply, 0, 2);
    this.own.postMessage({ spec, offset, length, reply });
    const w = waitAsync(ctl, 0, 0, FETCH_WAIT_MS);
    if (w.async) await this.holding(w.value);
    const state = Atomics.load(ctl, 0);
    if (state === 0) throw new ObdkitError('ETIMEDOUT', `remote read not answered within ${FETCH_WAIT_MS} ms`, { ref: spec.digest, offset });
    if (state !== 1) throw new ObdkitError('EREMOTE', 'remote read failed', { ref: spec.digest, offset });
    return Buffer.from(reply, 8, Atomics.load(ctl, 1));
  }

  /** The thread fetcher's counters (zeros before the first read). */
  async counters(): Promise<FetchCounters> {
    if (!this.worker) return emptyCounters();
    const m = await this.ask({ type: 'counters', id: this.nextId++ });
    return m.type === 'counters' ? m.counters : emptyCounters();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.worker) return;
    await this.ask({ type: 'close', id: this.nextId++ }).catch(() => undefined);
    this.own?.close();
    this.control?.close();
    await this.worker.terminate();
  }

  private ask(msg: Extract<ToThread, { id: number }>): Promise<FromThread> {
    return this.holding(
      new Promise((resolve) => {
        this.waiting.set(msg.id, resolve);
        this.post(msg);
      }),
    );
  }

  private async holding<T>(p: Promise<T>): Promise<T> {
    if (this.busy++ === 0) this.worker?.ref();
    try {
      return await p;
    } finally {
      if (--this.busy === 0) this.worker?.unref();
    }
  }

  private post(msg: ToThread, transfer: MessagePort[] = []): void {
    if (this.closed && msg.type !== 'close') throw new ObdkitError('ECLOSED', 'registry fetch thread is closed');
    this.start().postMessage(msg, transfer);
  }

  private start(): MessagePort {
    if (this.control) return this.control;
    const ch = new MessageChannel();
    const init: ThreadInit = { [MARKER]: true, hosts: this.opts.hosts ?? {}, settings: this.opts.settings ?? {}, control: ch.port2 };
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const w = new Worker(new URL(import.meta.url), { workerData: init, transferList: [ch.port2], execArgv });
    w.on('error', (err) => log.error({ err: err.message }, 'registry fetch thread crashed'));
    // Idle, it must not keep the process alive; its ports are unref'd for the same reason.
    w.unref();
    ch.port1.on('message', (m: FromThread) => this.onMessage(m));
    ch.port1.unref();
    this.worker = w;
    this.control = ch.port1;
    return ch.port1;
  }

  private onMessage(m: FromThread): void {
    if (m.type === 'credentials') {
      const provider = this.opts.credentials;
      Promise.resolve(provider ? provider(m.host) : undefined)
        .catch(() => undefined)
        .then((c) => this.control?.postMessage({ type: 'credentials', id: m.id, credentials: c ?? null } satisfies ToThread));
      return;
    }
    const done = this.waiting.get(m.id);
    this.waiting.delete(m.id);
    done?.(m);
  }
}

function emptyCounters(): FetchCounters {
  return {
    requests: 0, sharedRequests: 0, failures: 0, servedBytes: 0, networkBytes: 0, networkRequests: 0,
    cacheHitBytes: 0, memoryHitBytes: 0, readAheadChunks: 0, blobs: 0, blobBytes: 0, imageBytes: 0,
  };
}

function isThreadInit(d: unknown): d is ThreadInit {
  return typeof d === 'object' && d !== null && (d as Record<string, unknown>)[MARKER] === true;
}

/** The thread side: one RegistryFetcher, credentials asked from the main thread and remembered. */
function runThread(init: ThreadInit): void {
  const control = init.control;
  let nextId = 1;
  const pending = new Map<number, (c: Credentials | undefined) => void>();
  const remembered = new Map<string, { credentials: Credentials | undefined; at: number }>();
  const askMain = (host: string): Promise<Credentials | undefined> =>
    new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      control.postMessage({ type: 'credentials', id, host } satisfies FromThread);
    });
  const credentials: CredentialProvider = async (host) => {
    const had = remembered.get(host);
    if (had && Date.now() - had.at < CREDENTIALS_TTL_MS) return had.credentials;
    const asked = askMain(host).then((c) => {
      remembered.set(host, { credentials: c, at: Date.now() });
      return c;
    });
    if (!had) return asked;
    let timer: NodeJS.Timeout | undefined;
    const stale = new Promise<Credentials | undefined>((resolve) => {
      timer = setTimeout(() => resolve(had.credentials), CREDENTIALS_WAIT_MS);
    });
    return Promise.race([asked, stale]).finally(() => clearTimeout(timer));
  };
  const client = new RegistryClient({ hosts: init.hosts, credentials });
  const fetcher = new RegistryFetcher([], { ...init.settings, client });
  const ports: MessagePort[] = [];
  control.on('message', (m: ToThread) => {
    switch (m.type) {
      case 'serve':
        ports.push(m.port);
        serveRemoteReads(m.port, fetcher);
        return;
      case 'credentials': {
        const resolve = pending.get(m.id);
        pending.delete(m.id);
        resolve?.(m.credentials ?? undefined);
        return;
      }
      case 'counters':
        control.postMessage({ type: 'counters', id: m.id, counters: fetcher.counters() } satisfies FromThread);
        return;
      case 'close':
        void fetcher
          .close()
          .then(() => client.close())
          .finally(() => {
            for (const p of ports) p.close();
            control.postMessage({ type: 'closed', id: m.id } satisfies FromThread);
          });
        return;
    }
  });
}

if (!isMainThread && isThreadInit(workerData) && parentPort) runThread(workerData);
