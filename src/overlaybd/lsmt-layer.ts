// What every LSMT layer looks like to its users, whatever file form it comes from: a sorted list of
// mappings plus the file those mappings point into. SealedLayer (lsmt-file.ts) and RwLayer (rw-layer.ts)
// both provide it; commit.ts seals one into a new layer file and stack.ts stacks several into a device.
// Also the shared "read a byte range through a layer's mappings" routine.
import { FormatError } from '../util/errors.js';
import type { RandomAccess } from './io.js';
import { type Mapping, SECTOR_SIZE } from './segment.js';

export interface LayerView {
  /** Live mappings in logical order, non-overlapping, in sectors; `moffset` addresses `data`. */
  mappings(): Mapping[];
  /** The layer file: byte `moffset * 512` holds the first sector of a data mapping. */
  readonly data: RandomAccess;
  /** Bytes of the virtual disk (0 = take it from a lower layer). */
  readonly virtualSize: number;
  readonly parentUuid: string;
}

/** A byte range of the virtual disk. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** What one layer holds for a byte range: zeros where it has a hole or a zeroed record. */
export interface LayerRead {
  buf: Buffer;
  /** Byte ranges with no record in this layer (they read as zeros here; a stack reads them from below). */
  holes: ByteRange[];
}

export function checkSectorAligned(offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) {
    throw new RangeError(`${what}: offset ${offset} and length ${length} must be non-negative multiples of ${SECTOR_SIZE}`);
  }
}

/**
 * Reads [offset, offset+length) bytes given the layer's mappings for exactly that range
 * (sorted, trimmed, in sectors, as a lookup returns them).
 */
export function readThroughMappings(data: RandomAccess, pieces: readonly Mapping[], offset: number, length: number): LayerRead {
  const buf = Buffer.alloc(length);
  const holes: ByteRange[] = [];
  let cursor = offset;
  for (const m of pieces) {
    const start = m.offset * SECTOR_SIZE;
    const bytes = m.length * SECTOR_SIZE;
    if (start > cursor) holes.push({ offset: cursor, length: start - cursor });
    if (!m.zeroed) {
      const at = m.moffset * SECTOR_SIZE;
      const got = data.pread(at, bytes);
      if (got.length !== bytes) {
        throw new FormatError(`mapping of sectors [${m.offset}, ${m.offset + m.length}) points past the end of the layer file`, {
          file: data.name,
          offset: at + got.length,
        });
      }
      got.copy(buf, start - offset);
    }
    cursor = start + bytes;
  }
  if (cursor < offset + length) holes.push({ offset: cursor, length: offset + length - cursor });
  return { buf, holes };
}
