// Shared pieces of the LSMT tests: a seeded PRNG (failures reproduce), deterministic sector contents,
// a per-sector model of a layer stack to compare against, and temp directories.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Small deterministic PRNG (xorshift32): `rnd(n)` is an integer in [0, n). */
export function prng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

/** `sectors` sectors whose bytes depend on `seed` and on the sector number (every sector distinct). */
export function sectorData(seed: number, firstSector: number, sectors: number): Buffer {
  const b = Buffer.alloc(sectors * 512);
  for (let s = 0; s < sectors; s++) {
    let x = (Math.imul(seed, 0x9e3779b1) ^ Math.imul(firstSector + s + 1, 0x85ebca6b)) >>> 0 || 1;
    for (let i = 0; i < 512; i += 4) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      b.writeUInt32LE(x, s * 512 + i);
    }
  }
  return b;
}

/** What one sector of a layer holds in the model: nothing (hole), zeros that hide lowers, or bytes. */
export type Cell = undefined | 'zero' | Buffer;

/** Per-sector model of one layer: the obvious, slow truth the real structures are compared against. */
export class SectorModel {
  readonly cells: Cell[];
  constructor(readonly sectors: number) {
    this.cells = new Array<Cell>(sectors).fill(undefined);
  }
  write(offset: number, buf: Buffer): void {
    for (let i = 0; i < buf.length / 512; i++) this.cells[offset / 512 + i] = Buffer.from(buf.subarray(i * 512, (i + 1) * 512));
  }
  discard(offset: number, length: number): void {
    for (let i = 0; i < length / 512; i++) this.cells[offset / 512 + i] = 'zero';
  }
  /** Bytes of this layer alone (holes read as zeros). */
  read(offset: number, length: number): Buffer {
    return stackRead([this], offset, length);
  }
}

/** Bytes of a stack of models (index 0 = bottom): topmost non-hole wins. */
export function stackRead(models: readonly SectorModel[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length / 512; i++) {
    const s = offset / 512 + i;
    for (let l = models.length - 1; l >= 0; l--) {
      const c = models[l]!.cells[s];
      if (c === undefined) continue;
      if (c !== 'zero') c.copy(out, i * 512);
      break;
    }
  }
  return out;
}

export function tempDir(prefix: string): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), `obdkit-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}
