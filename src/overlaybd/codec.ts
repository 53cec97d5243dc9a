// Block codecs of ZFile: LZ4 raw blocks (no frame) and one complete zstd frame per block at level 3.
// Synchronous and allocation-light so that compress-worker.ts can call them in a tight loop inside a
// worker thread, and zfile.ts can decode single blocks on a random read. ZFile has no "stored" block
// type, so compression must always succeed: callers give an output of `compressBound` bytes.
import { createRequire } from 'node:module';
import zstdBinding from 'zstd-napi/binding.js';

/** Algorithm byte of the ZFile header (offset 76). 0 (mini-LZO) exists upstream but is not implemented. */
export const ZFILE_ALGO_LZ4 = 1;
export const ZFILE_ALGO_ZSTD = 2;
export type ZFileAlgorithm = 'lz4' | 'zstd';

/** zstd level the reference tools use for every block, whatever the header's level byte says. */
export const ZSTD_LEVEL = 3;

// The lz4 package ships no type declarations; this is the part of its API we use.
interface Lz4Block {
  /** LZ4_compress_default into `output`; returns 0 only if `output` is too small. */
  encodeBlock(input: Uint8Array, output: Uint8Array): number;
  /** LZ4_decompress_safe into `output`; returns the decoded length, negative on corrupt input. */
  decodeBlock(input: Uint8Array, output: Uint8Array): number;
  encodeBound(n: number): number;
}
const lz4 = createRequire(import.meta.url)('lz4') as Lz4Block;

export function algorithmCode(algorithm: ZFileAlgorithm): number {
  return algorithm === 'lz4' ? ZFILE_ALGO_LZ4 : ZFILE_ALGO_ZSTD;
}

export function algorithmName(code: number): ZFileAlgorithm | undefined {
  if (code === ZFILE_ALGO_LZ4) return 'lz4';
  if (code === ZFILE_ALGO_ZSTD) return 'zstd';
  return undefined;
}

/** Largest compressed size of `n` input bytes. */
export function compressBound(algorithm: ZFileAlgorithm, n: number): number {
  return algorithm === 'lz4' ? lz4.encodeBound(n) : zstdBinding.compressBound(n);
}

/**
 * Block compressor bound to one algorithm. Holds a zstd context so repeated calls reuse its tables;
 * create one per thread.
 */
export class BlockCompressor {
  private cctx: InstanceType<typeof zstdBinding.CCtx> | undefined;
  constructor(readonly algorithm: ZFileAlgorithm) {
    if (algorithm === 'zstd') this.cctx = new zstdBinding.CCtx();
  }

  /** Compresses `src` into `dst` (which must hold `compressBound(src.length)` bytes); returns the length. */
  compress(src: Uint8Array, dst: Uint8Array): number {
    if (this.cctx) return this.cctx.compress(dst, src, ZSTD_LEVEL);
    const n = lz4.encodeBlock(src, dst);
    // Only an undersized output makes LZ4_compress_default fail; that is a caller bug, not bad data.
    if (n <= 0) throw new Error(`lz4 compression of ${src.length} bytes failed (output ${dst.length} bytes)`);
    return n;
  }
}

/** Block decompressor bound to one algorithm; one per thread. */
export class BlockDecompressor {
  private dctx: InstanceType<typeof zstdBinding.DCtx> | undefined;
  constructor(readonly algorithm: ZFileAlgorithm) {
    if (algorithm === 'zstd') this.dctx = new zstdBinding.DCtx();
  }

  /**
   * Decodes `src` into `dst`; returns the decoded length, or a string saying why the block is corrupt.
   * Never writes past `dst`, whatever `src` holds.
   */
  decompress(src: Uint8Array, dst: Uint8Array): number | string {
    if (this.dctx) {
      try {
        return this.dctx.decompress(dst, src);
      } catch (err) {
        return `zstd: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    if (src.length === 0) return 'lz4: empty block';
    const n = lz4.decodeBlock(src, dst);
    return n < 0 ? `lz4: corrupt block (decoder stopped at input byte ${-n})` : n;
  }
}
