// Worker thread for shared-upper.test.ts: writes through its own SharedUpper view of a shared state.
// Each worker writes its own sectors and also races the others on a shared range.
import { workerData, parentPort } from 'node:worker_threads';
import { SharedUpper, type SharedUpperState } from '../../worker/device/shared-upper.js';

const { state, id, rounds } = workerData as { state: SharedUpperState; id: number; rounds: number };
const u = new SharedUpper(state);
for (let r = 0; r < rounds; r++) {
  const own = Buffer.alloc(4096, (id * 16 + (r % 16)) & 0xff);
  u.write(id * 1000 + (r % 100) * 8, own);
  u.write(100_000 + (r % 10) * 8, Buffer.alloc(4096, 0x80 + id));
  if (r % 50 === 0) u.discard(200_000 + id * 8, 8);
}
u.flush();
u.close();
parentPort?.postMessage('done');
