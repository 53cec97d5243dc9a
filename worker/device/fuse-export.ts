// Exports a device as one file in a FUSE mount served by this process: opens /dev/fuse, mounts it
// with mount(2), and starts worker threads (fuse-worker.ts) that answer requests, plus one thread that
// starts writeback of the upper data (writeback-worker.ts). The main thread only supervises, so it
// stays free for the build engine. A worker that dies is replaced; if none can be kept alive the
// connection is aborted, so readers get EIO instead of waiting forever. Stopping = lazy unmount, after
// which the kernel ends the connection and the workers' blocking reads return ENODEV. The caller must
// have detached the loop device first (worker/mount/teardown.ts), or the connection stays alive.
import { closeSync, existsSync, mkdirSync, openSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { execa } from 'execa';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';
import { assertNoMemoryLimit } from './cgroup-guard.js';
import type { DeviceSpec } from './device-spec.js';
import type { FuseWorkerData, FuseWorkerMessage } from './fuse-worker.js';
import { serveRemoteReads, type RemoteFetcher } from './remote-channel.js';
import { CTRL_STOP, CTRL_WINDOWS } from './shared-upper.js';
import { MNT_DETACH, MS_NODEV, MS_NOSUID, mountSyscall, umount2Syscall } from './syscalls.js';

export const FUSE_FSTYPE = 'fuse.obdkit';
const FUSECTL_DIR = '/sys/fs/fuse/connections';
/** Replacements of crashed workers over the life of one export. */
const RESPAWN_BUDGET = 16;

export interface FuseExportOptions {
  /** Empty directory to mount on; created if missing. */
  mountDir: string;
  device: DeviceSpec;
  /** Worker threads reading /dev/fuse (at least 2, so one busy request never stalls the rest). */
  workers?: number;
  /** Milliseconds to wait for the kernel's INIT. */
  initTimeoutMs?: number;
  /** Serves reads of remote lowers (on its own thread if it can connect(), else on the main thread); required if any lower is remote. */
  remote?: RemoteFetcher;
}

export class FuseExport {
  private stopping = false;
  private readonly live = new Set<Worker>();
  private readonly ports: MessagePort[] = [];
  private respawns = 0;
  private allExited: (() => void) | null = null;
  private writeback: { ctrl: Int32Array; exited: Promise<void> } | null = null;
  private initWaiter: { resolve(): void; reject(e: Error): void } | null = null;
  connection = -1;

  private constructor(
    private readonly opts: FuseExportOptions,
    private readonly fuseFd: number,
  ) {}

  get mountDir(): string {
    return this.opts.mountDir;
  }

  get diskPath(): string {
    return join(this.opts.mountDir, this.opts.device.fileName);
  }

  static async start(opts: FuseExportOptions): Promise<FuseExport> {
    assertNoMemoryLimit();
    if (opts.device.lowers.some((l) => l.kind === 'remote') && !opts.remote) {
      throw new ObdkitError('EINVAL', 'the device has remote lowers but no remote fetcher was given', { file: opts.mountDir });
    }
    mkdirSync(opts.mountDir, { recursive: true });
    const exp = new FuseExport(opts, openSync('/dev/fuse', 'r+'));
    let mounted = false;
    try {
      mountSyscall('obdkit', opts.mountDir, FUSE_FSTYPE, MS_NOSUID | MS_NODEV, `fd=${exp.fuseFd},rootmode=40000,user_id=0,group_id=0,allow_other`);
      mounted = true;
      // Workers can only read /dev/fuse once it is mounted; the kernel has queued INIT by now.
      const init = new Promise<void>((resolve, reject) => (exp.initWaiter = { resolve, reject }));
      const count = Math.max(2, opts.workers ?? 4);
      for (let i = 0; i < count; i++) exp.spawn(i);
      const timeout = opts.initTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        init,
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new ObdkitError('EFUSEINIT', `no FUSE INIT within ${timeout} ms`, { file: opts.mountDir })), timeout);
        }),
      ]).finally(() => clearTimeout(timer));
      const dev = statSync(opts.mountDir).dev;
      exp.connection = (dev & 0xff) | ((dev >> 12) & 0xfff00);
      exp.startWriteback();
      return exp;
    } catch (err) {
      exp.stopping = true;
      if (mounted) umount2Syscall(opts.mountDir, MNT_DETACH);
      await Promise.race([exp.workersGone(), delay(2000)]);
      for (const w of exp.live) void w.terminate();
      for (const p of exp.ports) p.close();
      closeSync(exp.fuseFd);
      throw err;
    }
  }

  private spawn(index: number): void {
    const data: FuseWorkerData = { fuseFd: this.fuseFd, device: this.opts.device, index };
    const url = new URL('./fuse-worker.js', import.meta.url);
    let w: Worker;
    if (this.opts.remote?.connect) {
      const port = this.opts.remote.connect();
      data.remotePort = port;
      w = new Worker(url, { workerData: data, transferList: [port] });
    } else if (this.opts.remote) {
      const ch = new MessageChannel();
      serveRemoteReads(ch.port1, this.opts.remote);
      this.ports.push(ch.port1);
      data.remotePort = ch.port2;
      w = new Worker(url, { workerData: data, transferList: [ch.port2] });
    } else {
      w = new Worker(url, { workerData: data });
    }
    this.live.add(w);
    w.on('message', (m: FuseWorkerMessage) => {
      if (m.type === 'init') {
        log.debug({ minor: m.minor, flags: m.flags.toString(16) }, 'FUSE INIT negotiated');
        this.initWaiter?.resolve();
      } else if (m.type === 'error') {
        log.warn({ op: m.op, mount: this.mountDir }, `device request failed: ${m.message}`);
      }
    });
    w.on('error', (err) => {
      log.error({ err: err.message, mount: this.mountDir }, 'FUSE worker crashed');
      this.initWaiter?.reject(err);
    });
    w.on('exit', () => {
      this.live.delete(w);
      if (this.stopping) {
        if (this.live.size === 0) this.allExited?.();
        return;
      }
      if (this.respawns < RESPAWN_BUDGET) {
        this.respawns++;
        this.spawn(index);
      } else if (this.live.size === 0) {
        // Nobody left to answer: fail every pending and future request rather than hang them.
        log.error({ mount: this.mountDir }, 'no FUSE worker left; aborting the connection');
        void abortFuseConnection(this.connection);
      }
    });
  }

  private startWriteback(): void {
    const upper = this.opts.device.upper;
    if (!upper) return;
    const w = new Worker(new URL('./writeback-worker.js', import.meta.url), { workerData: { state: upper } });
    w.on('error', (err) => log.warn({ err: err.message }, 'writeback thread failed'));
    this.writeback = { ctrl: new Int32Array(upper.ctrl), exited: new Promise((res) => w.once('exit', () => res())) };
  }

  private workersGone(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((res) => (this.allExited = res));
  }

  /** Unmounts and waits for the workers; aborts the connection if they do not end in time. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    umount2Syscall(this.mountDir, MNT_DETACH);
    const gone = this.workersGone();
    if (!(await Promise.race([gone.then(() => true), delay(timeoutMs).then(() => false)]))) {
      log.warn({ mount: this.mountDir, connection: this.connection }, 'FUSE workers still busy after unmount; aborting the connection');
      await abortFuseConnection(this.connection);
      if (!(await Promise.race([gone.then(() => true), delay(timeoutMs).then(() => false)]))) {
        for (const w of this.live) void w.terminate();
      }
    }
    for (const p of this.ports) p.close();
    closeSync(this.fuseFd);
    if (this.writeback) {
      Atomics.store(this.writeback.ctrl, CTRL_STOP, 1);
      Atomics.notify(this.writeback.ctrl, CTRL_WINDOWS);
      await this.writeback.exited;
    }
  }
}

/** Fails every pending request of a FUSE connection with EIO (the only cure for a wedged one). */
export async function abortFuseConnection(connection: number): Promise<void> {
  if (connection < 0) return;
  if (!existsSync(join(FUSECTL_DIR, String(connection)))) {
    await execa('mount', ['-t', 'fusectl', 'none', FUSECTL_DIR], { reject: false });
  }
  try {
    writeFileSync(join(FUSECTL_DIR, String(connection), 'abort'), '1');
  } catch (err) {
    log.warn({ connection, err: err instanceof Error ? err.message : String(err) }, 'could not abort FUSE connection');
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((res) => setTimeout(res, ms).unref());
}
