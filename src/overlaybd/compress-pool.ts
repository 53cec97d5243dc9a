// A pool of worker threads (compress-worker.ts) that turns batches of ZFile blocks into
// compressed-block-plus-CRC runs. zfile-writer.ts submits batches in order and awaits them in order,
// keeping a bounded number in flight; the pool itself only schedules. Workers are referenced only
// while they hold work, so an idle pool never keeps the process alive; `close()` terminates them.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ZFileAlgorithm } from './codec.js';
import type { CompressReply, CompressRequest, WorkerReady } from './compress-worker.js';

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

interface Task {
  req: CompressRequest;
  resolve: (b: CompressedBatch) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  task: Task | null;
  /** The worker's module has loaded; before that it is given nothing, so a failed start loses no data. */
  ready: boolean;
}

/** Consecutive workers that may die before loading before queued work is failed. */
const MAX_START_FAILURES = 3;

const WORKER_URL = new URL('./compress-worker.js', import.meta.url);

/** Parent's node flags minus those that only make sense for an entry script given on the command line. */
export function workerExecArgv(): string[] {
  return process.execArgv.filter((a) => !a.startsWith('--input-type'));
}

export class CompressPool {
  readonly threads: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private closed = false;
  private startFailures = 0;

  constructor(threads = availableParallelism()) {
    this.threads = Math.max(1, threads);
  }

  /**
   * Compresses `length` bytes of `input` (a whole number of `blockSize` blocks, the last may be short).
   * `input` (and `output`, a spare buffer to compress into) is transferred to a worker: the caller must
   * not touch either until they come back in the result.
   */
  compress(
    algorithm: ZFileAlgorithm, blockSize: number, input: ArrayBuffer, length: number, output?: ArrayBuffer,
  ): Promise<CompressedBatch> {
    if (this.closed) return Promise.reject(new Error('compress pool is closed'));
    return new Promise((resolve, reject) => {
      const req: CompressRequest = { id: this.nextId++, algorithm, blockSize, input, length };
      if (output) req.output = output;
      this.queue.push({ req, resolve, reject });
      this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const err = new Error('compress pool closed');
    for (const t of this.queue.splice(0)) t.reject(err);
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate()));
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const slot = this.slots.find((s) => s.ready && s.task === null);
      if (!slot) {
        // Start workers up to the limit; queued tasks go out as they report ready.
        const starting = this.slots.filter((s) => !s.ready).length;
        if (this.slots.length < this.threads && starting < this.queue.length) {
          this.spawn();
          continue;
        }
        return;
      }
      const task = this.queue.shift()!;
      slot.task = task;
      slot.worker.ref();
      slot.worker.postMessage(task.req, task.req.output ? [task.req.input, task.req.output] : [task.req.input]);
    }
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_URL, { execArgv: workerExecArgv() });
    const slot: Slot = { worker, task: null, ready: false };
    // Referenced while starting: queued work is waiting for it.
    worker.on('message', (reply: CompressReply | WorkerReady) => {
      if ('ready' in reply) {
        slot.ready = true;
        this.startFailures = 0;
        worker.unref();
        this.pump();
        return;
      }
      const task = slot.task;
      slot.task = null;
      worker.unref();
      if (task) {
        if ('error' in reply) task.reject(new Error(`compression worker failed: ${reply.error}`));
        else {
          task.resolve({
            data: Buffer.from(reply.output, 0, reply.used), lengths: reply.lengths, input: reply.input, output: reply.output,
          });
        }
      }
      this.pump();
    });
    const fail = (err: Error): void => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      this.slots.splice(i, 1);
      slot.task?.reject(new Error(`compression worker died: ${err.message}`));
      slot.task = null;
      if (this.closed) return;
      if (!slot.ready && ++this.startFailures >= MAX_START_FAILURES) {
        const e = new Error(`compression workers fail to start: ${err.message}`);
        for (const t of this.queue.splice(0)) t.reject(e);
        this.startFailures = 0;
        return;
      }
      this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`exited with code ${code} ${slot.ready ? 'while working' : 'before loading'}`));
    });
    this.slots.push(slot);
    return slot;
  }
}
