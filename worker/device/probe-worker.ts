// One-shot worker: opens a lower stack and reports its virtual size. Used by the main thread when the
// stack has remote layers, whose synchronous reads must happen off the main thread (remote-channel.ts).
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import type { LowerSpec } from './lower-source.js';
import { openLowerStack } from './lower-stack.js';
import { channelLowerSource } from './remote-channel.js';

const { lowers, port } = workerData as { lowers: LowerSpec[]; port: MessagePort };
try {
  const v = openLowerStack(lowers, channelLowerSource(port));
  parentPort?.postMessage({ ok: true, virtualSize: v.virtualSize });
  v.close();
} catch (err) {
  parentPort?.postMessage({ ok: false, error: err instanceof Error ? err.message : String(err) });
}
port.close();
