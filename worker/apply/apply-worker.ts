// Worker-thread entry for apply-in-worker.ts: applies one layer file and reports progress and the
// result (or the error's code, message and context) to the parent thread by message.
import { createReadStream } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { ObdkitError } from '../../src/util/errors.js';
import { applyLayer } from './apply-layer.js';
import type { ApplyWorkerData, ApplyWorkerMessage } from './apply-in-worker.js';

const data = workerData as ApplyWorkerData;
const port = parentPort;
if (port === null) throw new Error('apply-worker must run in a worker thread');

const post = (m: ApplyWorkerMessage): void => port.postMessage(m);
let last = 0;

applyLayer(createReadStream(data.file, { highWaterMark: 1 << 20 }), data.rootDir, {
  name: data.name,
  onProgress: (p) => {
    const now = Date.now();
    if (now - last < data.progressIntervalMs) return;
    last = now;
    post({ kind: 'progress', progress: p });
  },
}).then(
  (result) => post({ kind: 'done', result }),
  (err: unknown) => {
    if (err instanceof ObdkitError) {
      post({ kind: 'error', code: err.code, message: err.message, context: err.context, name: err.name });
    } else {
      post({ kind: 'error', code: 'EAPPLY', message: err instanceof Error ? err.message : String(err), context: {}, name: 'Error' });
    }
  },
);
