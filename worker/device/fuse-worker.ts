// Worker-thread entry of the FUSE server: a blocking read(2) loop on /dev/fuse. Each request is
// answered synchronously in this thread (layer reads, decompression, upper writes) and the reply is
// one write(2). Blocking reads here never touch libuv's threadpool, which the rest of the process
// (and the main thread's event loop) keeps for itself. The loop ends when the mount goes away
// (ENODEV), which is how fuse-export.ts stops its workers.
import { readSync, writeSync } from 'node:fs';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { errnoCode } from '../../src/util/errors.js';
import { openBackend, type DeviceSpec } from './device-spec.js';
import { READ_BUFFER_SIZE } from './fuse-proto.js';
import { FuseSession } from './fuse-session.js';

export interface FuseWorkerData {
  fuseFd: number;
  device: DeviceSpec;
  index: number;
  /** Present when the device has remote lowers. */
  remotePort?: MessagePort;
}

export type FuseWorkerMessage =
  | { type: 'init'; minor: number; flags: number }
  | { type: 'error'; op: number; message: string }
  | { type: 'stopped'; requests: number };

function post(m: FuseWorkerMessage): void {
  parentPort?.postMessage(m);
}

function main(): void {
  const { fuseFd, device, remotePort } = workerData as FuseWorkerData;
  const backend = openBackend(device, remotePort);
  let errors = 0;
  const session = new FuseSession(backend, device.fileName, {
    onInit: (minor, flags) => post({ type: 'init', minor, flags }),
    onError: (op, err) => {
      // Report the first few failures; a broken lower can fail every read.
      if (errors++ < 20) post({ type: 'error', op, message: err instanceof Error ? err.message : String(err) });
    },
  });
  const buf = Buffer.allocUnsafe(READ_BUFFER_SIZE);
  let requests = 0;
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fuseFd, buf, 0, buf.length, null);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'EINTR' || code === 'EAGAIN' || code === 'ENOENT') continue;
        if (code === 'ENODEV') break; // unmounted or aborted
        throw err;
      }
      if (n === 0) break;
      requests++;
      const out = session.handle(buf.subarray(0, n));
      if (out === null) continue;
      try {
        writeSync(fuseFd, out);
      } catch (err) {
        const code = errnoCode(err);
        if (code === 'ENOENT') continue; // the request was interrupted meanwhile
        if (code === 'ENODEV') break;
        throw err;
      }
    }
  } finally {
    backend.close();
    remotePort?.close();
    post({ type: 'stopped', requests });
  }
}

main();
