// Remote lower layers for threads that may not wait on promises: a worker's synchronous pread on a
// registry blob posts the range to the main thread over a MessagePort and sleeps on a
// SharedArrayBuffer (Atomics.wait) until the main thread, which owns the network client, has fetched
// the bytes and written them into that buffer. The wait has a deadline, so a dead registry turns into
// EIO for the reader, never into a hung block device. The main thread must never itself wait on the
// device while it is serving these fetches.
import type { MessagePort } from 'node:worker_threads';
import type { RandomAccess } from '../../src/overlaybd/io.js';
import { ObdkitError } from '../../src/util/errors.js';
import { openLocalLower, type LowerSource, type LowerSpec } from './lower-source.js';

export type RemoteLowerSpec = Extract<LowerSpec, { kind: 'remote' }>;

/** Main-thread side: how bytes of a remote blob are obtained (registry client, cache, ...). */
export interface RemoteFetcher {
  fetch(spec: RemoteLowerSpec, offset: number, length: number): Promise<Buffer>;
  /**
   * Optional: a port answered by a thread of the fetcher's own (the RangeRequest protocol below), for
   * a worker to read through. With it, device reads never depend on the main thread, which may then
   * block in synchronous calls on the mounted filesystem (a RUN step's user lookup, mount stubs).
   */
  connect?(): MessagePort;
}

interface RangeRequest {
  spec: RemoteLowerSpec;
  offset: number;
  length: number;
  /** Int32[0] = state (0 pending, 1 done, 2 failed), Int32[1] = bytes, then the bytes from offset 8. */
  reply: SharedArrayBuffer;
}

const PENDING = 0;
const DONE = 1;
const FAILED = 2;

/** Answers range requests arriving on `port` until it closes. */
export function serveRemoteReads(port: MessagePort, fetcher: RemoteFetcher): void {
  port.on('message', (req: RangeRequest) => {
    const ctl = new Int32Array(req.reply, 0, 2);
    fetcher
      .fetch(req.spec, req.offset, req.length)
      .then((buf) => {
        const n = Math.min(buf.length, req.length);
        Buffer.from(req.reply, 8, n).set(buf.subarray(0, n));
        Atomics.store(ctl, 1, n);
        Atomics.store(ctl, 0, DONE);
      })
      .catch(() => Atomics.store(ctl, 0, FAILED))
      .finally(() => Atomics.notify(ctl, 0));
  });
}

/** Worker side: a RandomAccess over a remote blob whose reads are served by the main thread. */
export class ChannelRandomAccess implements RandomAccess {
  readonly size: number;
  readonly name: string;

  constructor(
    private readonly port: MessagePort,
    private readonly spec: RemoteLowerSpec,
    private readonly timeoutMs = 60_000,
  ) {
    this.size = spec.size;
    this.name = spec.digest;
  }

  pread(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const reply = new SharedArrayBuffer(8 + (end - offset));
    const ctl = new Int32Array(reply, 0, 2);
    this.port.postMessage({ spec: this.spec, offset, length: end - offset, reply } satisfies RangeRequest);
    const deadline = Date.now() + this.timeoutMs;
    while (Atomics.load(ctl, 0) === PENDING) {
      const left = deadline - Date.now();
      if (left <= 0 || Atomics.wait(ctl, 0, PENDING, left) === 'timed-out') {
        throw new ObdkitError('ETIMEDOUT', `remote read not answered within ${this.timeoutMs} ms`, { ref: this.spec.digest, offset });
      }
    }
    if (Atomics.load(ctl, 0) === FAILED) throw new ObdkitError('EREMOTE', 'remote read failed', { ref: this.spec.digest, offset });
    return Buffer.from(reply, 8, Atomics.load(ctl, 1));
  }
}

/** Local files read directly, remote blobs through the main thread. */
export function channelLowerSource(port: MessagePort | undefined): LowerSource {
  return {
    open(spec) {
      if (spec.kind === 'file') return openLocalLower(spec);
      if (!port) throw new ObdkitError('ENOTSUP', 'remote lower layer without a fetcher', { ref: spec.digest });
      return new ChannelRandomAccess(port, spec);
    },
  };
}
