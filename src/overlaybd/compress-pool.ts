// A pool of worker threads (compress-worker.ts) that turns batches of ZFile blocks into
// compressed-block-plus-CRC runs. zfile-writer.ts submits batches in order and awaits them in order,
// keeping a bounded number in flight; the pool itself only schedules (worker-pool.ts).
//
// One pool is shared by the whole process (`sharedCompressPool()`): it is created on first use and
// its workers stay loaded between layers, unreferenced while idle so they never keep the process
// alive. Two layers written at once simply queue their batches on it; each batch's result goes back
// to the call that submitted it. A private `new CompressPool(n)` is still possible (tests, benches).
import { availableParallelism } from 'node:os';
import type { ZFileAlgorithm } from './codec.js';
import type { CompressReply, CompressRequest } from './compress-worker.js';
import { WarmPool, workerExecArgv } from './worker-pool.js';

export { workerExecArgv };

export interface CompressedBatch {
  /** block0 crc0 block1 crc1 … */
  data: Buffer;
  /** Stored length of each block, CRC included (the jump-table entries). */
  lengths: Uint32Array;
  /** The input's ArrayBuffer, handed back for reuse. */
  input: ArrayBuffer;
  /** The ArrayBuffer under `data`, reusable as `output` of a later call once `data` is consumed. */
  output: ArrayBuffer;
}

const WORKER_URL = new URL('./compress-worker.js', import.meta.url);

export class CompressPool {
  private readonly pool: WarmPool<CompressRequest, CompressReply>;
  private nextId = 1;

  constructor(threads = availableParallelism()) {
    this.pool = new WarmPool({ url: WORKER_URL, threads, name: 'compression' });
  }

  get threads(): number {
    return this.pool.threads;
  }

  get isClosed(): boolean {
    return this.pool.isClosed;
  }

  /**
   * Compresses `length` bytes of `input` (a whole number of `blockSize` blocks, the last may be short).
   * `input` (and `output`, a spare buffer to compress into) is transferred to a worker: the caller must
   * not touch either until they come back in the result.
   */
  async compress(
    algorithm: ZFileAlgorithm, blockSize: number, input: ArrayBuffer, length: number, output?: ArrayBuffer,
  ): Promise<CompressedBatch> {
    const req: CompressRequest = { id: this.nextId++, algorithm, blockSize, input, length };
    if (output) req.output = output;
    const reply = await this.pool.run(req, output ? [input, output] : [input]);
    if ('error' in reply) throw new Error(`compression worker failed: ${reply.error}`);
    return { data: Buffer.from(reply.output, 0, reply.used), lengths: reply.lengths, input: reply.input, output: reply.output };
  }

  /** Loads every worker now (without waiting), so the next layer does not pay for their start. */
  warm(): void {
    this.pool.warm();
  }

  /** Thread ids of the loaded workers. */
  threadIds(): number[] {
    return this.pool.threadIds();
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

let shared: CompressPool | undefined;

/** The process-wide pool, one worker per CPU, created on first call (or again after a close). */
export function sharedCompressPool(): CompressPool {
  if (!shared || shared.isClosed) shared = new CompressPool();
  return shared;
}

/** Terminates the process-wide pool's workers, if any; a later `sharedCompressPool()` starts afresh. */
export async function closeSharedCompressPool(): Promise<void> {
  const p = shared;
  shared = undefined;
  await p?.close();
}
