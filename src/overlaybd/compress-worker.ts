// Worker-thread side of compress-pool.ts: receives a batch of uncompressed bytes (a whole number of
// ZFile blocks, the last possibly short), compresses each block with codec.ts, appends its raw CRC32C
// (seed 100007) and sends back the packed blocks plus their stored lengths. Buffers move by transfer.
// The worker lives as long as its pool (worker-pool.ts): codecs and zero-block images are made once.
//
// A full block of zeros (common in disk layers: preallocated files, sparse tails) always compresses
// to the same bytes, so the first one is compressed for real and its image (block + CRC) is copied
// for every later one: same output, no codec or CRC call.
import { BlockCompressor, compressBound, type ZFileAlgorithm } from './codec.js';
import { ZFILE_BLOCK_CRC_SEED, crc32cRaw } from './crc32c.js';
import { serveRequests } from './worker-pool.js';

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

interface Codec {
  compressor: BlockCompressor;
  /** Per block size: a block of zeros, and its compressed form followed by its CRC. */
  zeroImages: Map<number, { zeros: Buffer; image: Buffer }>;
}

const codecs = new Map<ZFileAlgorithm, Codec>();

function codecFor(algorithm: ZFileAlgorithm): Codec {
  let c = codecs.get(algorithm);
  if (!c) codecs.set(algorithm, (c = { compressor: new BlockCompressor(algorithm), zeroImages: new Map() }));
  return c;
}

function zeroImage(codec: Codec, blockSize: number): { zeros: Buffer; image: Buffer } {
  let z = codec.zeroImages.get(blockSize);
  if (!z) {
    const zeros = Buffer.alloc(blockSize);
    const out = Buffer.alloc(compressBound(codec.compressor.algorithm, blockSize) + 4);
    const n = codec.compressor.compress(zeros, out);
    out.writeUInt32LE(crc32cRaw(out.subarray(0, n), ZFILE_BLOCK_CRC_SEED), n);
    z = { zeros, image: Buffer.from(out.subarray(0, n + 4)) };
    codec.zeroImages.set(blockSize, z);
  }
  return z;
}

function compressBatch(req: CompressRequest): CompressReply {
  const codec = codecFor(req.algorithm);
  const c = codec.compressor;
  const bs = req.blockSize;
  const len = req.length;
  const input = new Uint8Array(req.input, 0, len);
  const { zeros, image: zero } = zeroImage(codec, bs);
  const blocks = Math.ceil(len / bs);
  const slot = compressBound(req.algorithm, bs) + 4;
  const need = blocks * slot;
  const output = req.output && req.output.byteLength >= need ? req.output : new ArrayBuffer(need);
  const out = Buffer.from(output);
  const lengths = new Uint32Array(blocks);
  let used = 0;
  for (let b = 0, start = 0; b < blocks; b++, start += bs) {
    const end = Math.min(len, start + bs);
    // The first byte rules out nearly every data block before the (native) comparison.
    if (input[start] === 0 && end - start === bs && zeros.compare(input, start, end) === 0) {
      out.set(zero, used);
      lengths[b] = zero.length;
      used += zero.length;
      continue;
    }
    const n = c.compress(input.subarray(start, end), out.subarray(used, used + slot - 4));
    out.writeUInt32LE(crc32cRaw(out.subarray(used, used + n), ZFILE_BLOCK_CRC_SEED), used + n);
    lengths[b] = n + 4;
    used += n + 4;
  }
  return { id: req.id, output, used, lengths, input: req.input };
}

serveRequests<CompressRequest, CompressReply>((req) => {
  let reply: CompressReply;
  try {
    reply = compressBatch(req);
  } catch (err) {
    reply = { id: req.id, error: err instanceof Error ? err.stack ?? err.message : String(err) };
  }
  return { reply, transfer: 'error' in reply ? [] : [reply.output, reply.input, reply.lengths.buffer as ArrayBuffer] };
});
