// The CRC32C variant overlaybd uses everywhere ("raw"): Castagnoli polynomial, reflected, but with no
// initial and no final inversion, so the running value starts at the seed and is returned as is.
// ZFile block checksums use seed 100007; header digests, jump tables, LSMT and trace checksums use 0.
// @node-rs/crc32 computes the standard (inverted) CRC-32C in hardware; inverting the seed on the way in
// and the result on the way out turns it into the raw variant at the same speed.
import { crc32c as standardCrc32c } from '@node-rs/crc32';

/** Seed of the per-block CRC that follows every compressed ZFile block. */
export const ZFILE_BLOCK_CRC_SEED = 100007;

/** Raw CRC32C of `data`, continuing from `seed` (0 unless a format says otherwise). */
export function crc32cRaw(data: Uint8Array, seed = 0): number {
  return ~standardCrc32c(data, ~seed >>> 0) >>> 0;
}
