// An ordered set of non-overlapping mappings with "newer wins" insertion: the in-memory index of a
// writable layer (rw-layer.ts replays its index file into one) and of a merged layer stack (stack.ts).
//
// Inserting a mapping removes what it covers; a record it cuts on the left keeps its file offset, one it
// cuts on the right moves its file offset along by the trimmed amount (unless zeroed). A device written in
// 4 KiB pieces can hold millions of records, so the set is a list of sorted chunks (a flat, two-level
// B-tree): finding the place is a binary search over chunks and then within one, and an insert shifts at
// most one chunk. Records live in typed arrays (about 20 bytes each instead of a JS object apiece).
import { MAX_LENGTH, type Mapping, backwardMappingTo, forwardMappingTo, mappingEnd } from './segment.js';

/** A chunk splits in two once it holds more than twice this many records. */
const CHUNK_HALF = 512;
/** One insert adds at most two records to a chunk (left remainder + new + right remainder - the cut one). */
const CHUNK_CAPACITY = 2 * CHUNK_HALF + 2;
const ZEROED_BIT = 0x100;

class Chunk {
  n = 0;
  readonly off = new Float64Array(CHUNK_CAPACITY);
  readonly moff = new Float64Array(CHUNK_CAPACITY);
  readonly len = new Uint16Array(CHUNK_CAPACITY);
  /** zeroed flag (bit 8) | tag (bits 0..7) */
  readonly meta = new Uint16Array(CHUNK_CAPACITY);

  end(i: number): number {
    return this.off[i]! + this.len[i]!;
  }
  lastEnd(): number {
    return this.end(this.n - 1);
  }
  get(i: number): Mapping {
    const meta = this.meta[i]!;
    return { offset: this.off[i]!, length: this.len[i]!, moffset: this.moff[i]!, zeroed: (meta & ZEROED_BIT) !== 0, tag: meta & 0xff };
  }
  set(i: number, m: Mapping): void {
    this.off[i] = m.offset;
    this.len[i] = m.length;
    this.moff[i] = m.moffset;
    this.meta[i] = (m.zeroed ? ZEROED_BIT : 0) | (m.tag & 0xff);
  }
  /** Moves records [from, n) to start at `to` (either direction). */
  shift(from: number, to: number): void {
    if (from === to || from >= this.n) return;
    this.off.copyWithin(to, from, this.n);
    this.moff.copyWithin(to, from, this.n);
    this.len.copyWithin(to, from, this.n);
    this.meta.copyWithin(to, from, this.n);
  }
  /** Index of the first record ending after `offset` (n if none). */
  firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.off[mid]! + this.len[mid]! > offset) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
  /** The upper half, moved into a new chunk. */
  splitOff(): Chunk {
    const c = new Chunk();
    const from = CHUNK_HALF;
    c.n = this.n - from;
    c.off.set(this.off.subarray(from, this.n));
    c.moff.set(this.moff.subarray(from, this.n));
    c.len.set(this.len.subarray(from, this.n));
    c.meta.set(this.meta.subarray(from, this.n));
    this.n = from;
    return c;
  }
}

export class SegmentIndex {
  private chunks: Chunk[] = [];
  private count = 0;

  constructor(initial?: Iterable<Mapping>) {
    if (initial) for (const m of initial) this.insert(m);
  }

  /** Number of records. */
  get size(): number {
    return this.count;
  }

  /** Overlays `m` (sectors; length 1..16383, tag 0..255) on the set. */
  insert(m: Mapping): void {
    if (m.length <= 0) return;
    if (m.length > MAX_LENGTH) throw new RangeError(`a record covers at most ${MAX_LENGTH} sectors, got ${m.length}`);
    const end = m.offset + m.length;
    const chunks = this.chunks;
    const ci = this.chunkFor(m.offset);
    if (ci === chunks.length) {
      // Everything stored ends at or before m.offset: the common sequential-write case.
      let last = chunks[chunks.length - 1];
      if (!last || last.n >= 2 * CHUNK_HALF) {
        last = new Chunk();
        chunks.push(last);
      }
      last.set(last.n++, m);
      this.count++;
      return;
    }
    const chunk = chunks[ci]!;
    const i = chunk.firstEndingAfter(m.offset);
    const replacement: Mapping[] = [];
    if (chunk.off[i]! < m.offset) replacement.push(backwardMappingTo(chunk.get(i), m.offset));
    replacement.push(m);

    // Records starting before `end`, from (ci, i) on, are removed; they may span several chunks.
    let j = i;
    while (j < chunk.n && chunk.off[j]! < end) j++;
    let lastRemoved: Mapping | undefined = j > i ? chunk.get(j - 1) : undefined;
    let removed = j - i;
    let emptied = 0;
    if (j === chunk.n) {
      for (let nc = ci + 1; nc < chunks.length; nc++) {
        const c = chunks[nc]!;
        let k = 0;
        while (k < c.n && c.off[k]! < end) k++;
        if (k === 0) break;
        lastRemoved = c.get(k - 1);
        removed += k;
        if (k === c.n) {
          emptied++;
          continue;
        }
        c.shift(k, 0);
        c.n -= k;
        break;
      }
    }
    if (lastRemoved && mappingEnd(lastRemoved) > end) replacement.push(forwardMappingTo(lastRemoved, end));

    // Replace chunk[i, j) by the replacement records.
    chunk.shift(j, i + replacement.length);
    chunk.n += replacement.length - (j - i);
    for (let k = 0; k < replacement.length; k++) chunk.set(i + k, replacement[k]!);
    if (emptied) chunks.splice(ci + 1, emptied);
    this.count += replacement.length - removed;
    if (chunk.n > 2 * CHUNK_HALF) chunks.splice(ci + 1, 0, chunk.splitOff());
  }

  /**
   * The records intersecting [offset, offset+length) (sectors), in order, trimmed to the range.
   * Gaps between them are holes.
   */
  lookup(offset: number, length: number): Mapping[] {
    const out: Mapping[] = [];
    if (length <= 0) return out;
    const end = offset + length;
    for (let ci = this.chunkFor(offset); ci < this.chunks.length; ci++) {
      const c = this.chunks[ci]!;
      for (let i = out.length === 0 ? c.firstEndingAfter(offset) : 0; i < c.n; i++) {
        if (c.off[i]! >= end) return out;
        let m = c.get(i);
        if (m.offset < offset) m = forwardMappingTo(m, offset);
        if (mappingEnd(m) > end) m = backwardMappingTo(m, end);
        out.push(m);
      }
    }
    return out;
  }

  /** All records in logical order (fresh objects). */
  *[Symbol.iterator](): IterableIterator<Mapping> {
    for (const c of this.chunks) for (let i = 0; i < c.n; i++) yield c.get(i);
  }

  /** A sorted array of all records. */
  toArray(): Mapping[] {
    const out: Mapping[] = new Array(this.count);
    let k = 0;
    for (const c of this.chunks) for (let i = 0; i < c.n; i++) out[k++] = c.get(i);
    return out;
  }

  /** Sectors covered by data (non-zeroed) records. */
  dataSectors(): number {
    let n = 0;
    for (const c of this.chunks) for (let i = 0; i < c.n; i++) if (!(c.meta[i]! & ZEROED_BIT)) n += c.len[i]!;
    return n;
  }

  /** Index of the first chunk whose last record ends after `offset` (chunks.length if none). */
  private chunkFor(offset: number): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.chunks[mid]!.lastEnd() > offset) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/**
 * Binary search over a sorted, non-overlapping array (a sealed layer's index): the records intersecting
 * [offset, offset+length), trimmed to it.
 */
export function lookupSorted(sorted: readonly Mapping[], offset: number, length: number): Mapping[] {
  const out: Mapping[] = [];
  if (length <= 0) return out;
  const end = offset + length;
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (mappingEnd(sorted[mid]!) > offset) hi = mid;
    else lo = mid + 1;
  }
  for (let i = lo; i < sorted.length; i++) {
    let m = sorted[i]!;
    if (m.offset >= end) break;
    if (m.offset < offset) m = forwardMappingTo(m, offset);
    if (mappingEnd(m) > end) m = backwardMappingTo(m, end);
    else m = { ...m };
    out.push(m);
  }
  return out;
}
