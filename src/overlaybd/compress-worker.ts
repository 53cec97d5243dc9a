// Worker-thread side of compress-pool.ts: receives a batch of uncompressed bytes (a whole number of
// ZFile blocks, the last possibly short), compresses each block with codec.ts, appends its raw CRC32C
// (seed 100007) and sends back the packed blocks plus their stored lengths. Buffers move by transfer.
import { parentPort } from 'node:worker_threads';
import { BlockCompressor, compressBound, type ZFileAlgorithm } from './codec.js';
import { ZFILE_BLOCK_CRC_SEED, crc32cRaw } from './crc32c.js';

/** Main thread → worker. `input` is transferred; its bytes are [0, length). */
export interface CompressRequest {
  id: number;
  algorithm: ZFileAlgorithm;
  blockSize: number;
  input: ArrayBuffer;
  length: number;
  /** A spare output buffer to fill, if big enough (saves allocating and faulting in fresh memory). */
  output?: ArrayBuffer;
}

/** Worker → main thread. `output` holds `used` bytes: block0 crc0 block1 crc1 …; `input` is handed back. */
export type CompressReply =
  | { id: number; output: ArrayBuffer; used: number; lengths: Uint32Array; input: ArrayBuffer }
  | { id: number; error: string };

/** Sent once when the module has loaded: only then does the pool hand over (transfer) any data. */
export interface WorkerReady {
  ready: true;
}

const compressors = new Map<ZFileAlgorithm, BlockCompressor>();

function compressBatch(req: CompressRequest): CompressReply {
  let c = compressors.get(req.algorithm);
  if (!c) compressors.set(req.algorithm, (c = new BlockCompressor(req.algorithm)));
  const input = new Uint8Array(req.input, 0, req.length);
  const blocks = Math.ceil(req.length / req.blockSize);
  const slot = compressBound(req.algorithm, req.blockSize) + 4;
  const need = blocks * slot;
  const output = req.output && req.output.byteLength >= need ? req.output : new ArrayBuffer(need);
  const out = Buffer.from(output);
  const lengths = new Uint32Array(blocks);
  let used = 0;
  for (let b = 0; b < blocks; b++) {
    const src = input.subarray(b * req.blockSize, Math.min(req.length, (b + 1) * req.blockSize));
    const n = c.compress(src, out.subarray(used, used + slot - 4));
    out.writeUInt32LE(crc32cRaw(out.subarray(used, used + n), ZFILE_BLOCK_CRC_SEED), used + n);
    lengths[b] = n + 4;
    used += n + 4;
  }
  return { id: req.id, output, used, lengths, input: req.input };
}

parentPort?.on('message', (req: CompressRequest) => {
  let reply: CompressReply;
  try {
    reply = compressBatch(req);
  } catch (err) {
    reply = { id: req.id, error: err instanceof Error ? err.stack ?? err.message : String(err) };
  }
  parentPort!.postMessage(reply, 'error' in reply ? [] : [reply.output, reply.input, reply.lengths.buffer as ArrayBuffer]);
});

const ready: WorkerReady = { ready: true };
parentPort?.postMessage(ready);
