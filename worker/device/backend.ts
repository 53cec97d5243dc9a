// The block device as the FUSE session sees it: positional reads and writes, discard and flush on
// one virtual disk. MergedBackend is the only implementation: the writable upper (shared-upper.ts)
// over a read-only stack of lower layers (lower-source.ts); for each sector the upper wins if it has
// written or discarded it, otherwise the lowers answer, otherwise zeros.
import { ObdkitError } from '../../src/util/errors.js';
import { SECTOR } from './rw-pair.js';
import { SharedUpper, UNMAPPED, ZEROED } from './shared-upper.js';
import type { LowerView } from './lower-source.js';

export interface BlockBackend {
  readonly size: number;
  readonly writable: boolean;
  /** Fills `out` with the bytes at `offset` (caller clips to `size`). */
  readInto(offset: number, out: Buffer): void;
  write(offset: number, data: Buffer): void;
  /** Makes [offset, offset+length) read as zeros without storing data. */
  discard(offset: number, length: number): void;
  flush(): void;
  close(): void;
}

export class MergedBackend implements BlockBackend {
  readonly writable: boolean;

  constructor(
    readonly size: number,
    private readonly upper: SharedUpper | null,
    private readonly lower: LowerView | null,
  ) {
    this.writable = upper !== null;
  }

  readInto(offset: number, out: Buffer): void {
    if (offset % SECTOR === 0 && out.length % SECTOR === 0) {
      this.readSectors(offset / SECTOR, out);
      return;
    }
    const start = Math.floor(offset / SECTOR) * SECTOR;
    const end = Math.ceil((offset + out.length) / SECTOR) * SECTOR;
    const tmp = Buffer.alloc(end - start);
    this.readSectors(start / SECTOR, tmp);
    tmp.copy(out, 0, offset - start, offset - start + out.length);
  }

  write(offset: number, data: Buffer): void {
    const upper = this.requireUpper();
    if (offset % SECTOR === 0 && data.length % SECTOR === 0) {
      upper.write(offset / SECTOR, data);
      return;
    }
    // Only a direct reader of the image file sends unaligned writes (the loop device never does):
    // read-modify-write the covering sectors.
    const start = Math.floor(offset / SECTOR) * SECTOR;
    const end = Math.ceil((offset + data.length) / SECTOR) * SECTOR;
    const tmp = Buffer.alloc(end - start);
    this.readSectors(start / SECTOR, tmp);
    data.copy(tmp, offset - start);
    upper.write(start / SECTOR, tmp);
  }

  discard(offset: number, length: number): void {
    const upper = this.requireUpper();
    const first = Math.ceil(offset / SECTOR);
    const last = Math.floor((offset + length) / SECTOR);
    // Partial sectors at the edges must still read as zeros afterwards: write them.
    if (offset % SECTOR !== 0) this.write(offset, Buffer.alloc(Math.min(length, first * SECTOR - offset)));
    if ((offset + length) % SECTOR !== 0 && last >= first) this.write(last * SECTOR, Buffer.alloc(offset + length - last * SECTOR));
    if (last > first) upper.discard(first, last - first);
  }

  flush(): void {
    this.upper?.flush();
  }

  close(): void {
    this.upper?.close();
    this.lower?.close();
  }

  private requireUpper(): SharedUpper {
    if (!this.upper) throw new ObdkitError('EROFS', 'device is read-only');
    return this.upper;
  }

  /** Groups the sectors into runs by owner so each run is one pread. */
  private readSectors(sector: number, out: Buffer): void {
    const count = out.length / SECTOR;
    if (!this.upper) {
      this.readLower(sector, out);
      return;
    }
    const t = this.upper.table;
    let i = 0;
    while (i < count) {
      const v = t[sector + i];
      let j = i + 1;
      if (v === UNMAPPED || v === ZEROED) {
        while (j < count && t[sector + j] === v) j++;
      } else {
        while (j < count && t[sector + j] === v + (j - i)) j++;
      }
      const part = out.subarray(i * SECTOR, j * SECTOR);
      if (v === UNMAPPED) this.readLower(sector + i, part);
      else if (v === ZEROED) part.fill(0);
      else this.upper.readData(v, part);
      i = j;
    }
  }

  private readLower(sector: number, out: Buffer): void {
    if (!this.lower) {
      out.fill(0);
      return;
    }
    const got = this.lower.read(sector * SECTOR, out.length);
    got.copy(out);
    if (got.length < out.length) out.fill(0, got.length);
  }
}
