// Exports a device as one file in a FUSE mount served by this process: opens /dev/fuse, mounts it
// with mount(2), and starts worker threads (fuse-worker.ts) that answer requests. The main thread
// only supervises, so it stays free for the build engine. Stopping = lazy unmount, after which the
// kernel ends the connection and the workers' blocking reads return ENODEV. The caller must have
// detached the loop device first (see worker/mount/teardown order), or the connection stays alive.
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

export interface FuseExportOptions {
  /** Empty directory to mount on; created if missing. */
  mountDir: string;
  device: DeviceSpec;
  /** Worker threads reading /dev/fuse (at least 2, so one busy request never stalls the rest). */
  workers?: number;
  /** Milliseconds to wait for the kernel's INIT. */
  initTimeoutMs?: number;
  /** Serves reads of remote lowers on the main thread; required if any lower is remote. */
  remote?: RemoteFetcher;
}

export class FuseExport {
  private stopped = false;

  private constructor(
    readonly mountDir: string,
    readonly diskPath: string,
    readonly connection: number,
    private readonly fuseFd: number,
    private readonly workers: Worker[],
    private readonly exited: Promise<void>[],
    private readonly ports: MessagePort[],
    private readonly writeback: { ctrl: Int32Array; exited: Promise<void> } | null,
  ) {}

  static async start(opts: FuseExportOptions): Promise<FuseExport> {
    assertNoMemoryLimit();
    const count = Math.max(2, opts.workers ?? 4);
    mkdirSync(opts.mountDir, { recursive: true });
    const fd = openSync('/dev/fuse', 'r+');
    const workers: Worker[] = [];
    const exited: Promise<void>[] = [];
    const ports: MessagePort[] = [];
    const needsRemote = opts.device.lowers.some((l) => l.kind === 'remote');
    if (needsRemote && !opts.remote) {
      closeSync(fd);
      throw new ObdkitError('EINVAL', 'the device has remote lowers but no remote fetcher was given', { file: opts.mountDir });
    }
    let mounted = false;
    try {
      mountSyscall('obdkit', opts.mountDir, FUSE_FSTYPE, MS_NOSUID | MS_NODEV, `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other`);
      mounted = true;
      let resolveInit!: () => void;
      let rejectInit!: (e: Error) => void;
      const init = new Promise<void>((res, rej) => {
        resolveInit = res;
        rejectInit = rej;
      });
      for (let i = 0; i < count; i++) {
        const data: FuseWorkerData = { fuseFd: fd, device: opts.device, index: i };
        let w: Worker;
        if (needsRemote) {
          const ch = new MessageChannel();
          serveRemoteReads(ch.port1, opts.remote!);
          ports.push(ch.port1);
          data.remotePort = ch.port2;
          w = new Worker(new URL('./fuse-worker.js', import.meta.url), { workerData: data, transferList: [ch.port2] });
        } else {
          w = new Worker(new URL('./fuse-worker.js', import.meta.url), { workerData: data });
        }
        w.on('message', (m: FuseWorkerMessage) => {
          if (m.type === 'init') {
            log.debug({ minor: m.minor, flags: m.flags.toString(16) }, 'FUSE INIT negotiated');
            resolveInit();
          } else if (m.type === 'error') {
            log.warn({ op: m.op, mount: opts.mountDir }, `device request failed: ${m.message}`);
          }
        });
        exited.push(
          new Promise<void>((res) => {
            w.on('error', (err) => {
              log.error({ err: err.message, mount: opts.mountDir }, 'FUSE worker crashed');
              rejectInit(err);
            });
            w.on('exit', () => res());
          }),
        );
        workers.push(w);
      }
      const timeout = opts.initTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        init,
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new ObdkitError('EFUSEINIT', `no FUSE INIT within ${timeout} ms`, { file: opts.mountDir })), timeout);
        }),
      ]).finally(() => clearTimeout(timer));
      const dev = statSync(opts.mountDir).dev;
      const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
      const upper = opts.device.upper;
      let writeback: { ctrl: Int32Array; exited: Promise<void> } | null = null;
      if (upper) {
        const w = new Worker(new URL('./writeback-worker.js', import.meta.url), { workerData: { state: upper } });
        w.on('error', (err) => log.warn({ err: err.message }, 'writeback thread failed'));
        writeback = { ctrl: new Int32Array(upper.ctrl), exited: new Promise((res) => w.once('exit', () => res())) };
      }
      return new FuseExport(opts.mountDir, join(opts.mountDir, opts.device.fileName), minor, fd, workers, exited, ports, writeback);
    } catch (err) {
      if (mounted) umount2Syscall(opts.mountDir, MNT_DETACH);
      await Promise.race([Promise.all(exited), delay(2000)]);
      for (const w of workers) void w.terminate();
      for (const p of ports) p.close();
      closeSync(fd);
      throw err;
    }
  }

  /** Unmounts and waits for the workers; aborts the connection if they do not end in time. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    umount2Syscall(this.mountDir, MNT_DETACH);
    const all = Promise.all(this.exited);
    if ((await Promise.race([all.then(() => true), delay(timeoutMs).then(() => false)])) === false) {
      log.warn({ mount: this.mountDir, connection: this.connection }, 'FUSE workers still busy after unmount; aborting the connection');
      await abortFuseConnection(this.connection);
      if ((await Promise.race([all.then(() => true), delay(timeoutMs).then(() => false)])) === false) {
        for (const w of this.workers) void w.terminate();
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
  if (!existsSync(join(FUSECTL_DIR, 'abort')) && !existsSync(join(FUSECTL_DIR, String(connection)))) {
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
