// An ordered set of non-overlapping mappings with "newer wins" insertion: the in-memory index of a
// writable layer (rw-layer.ts replays its index file into one) and of a merged layer stack (stack.ts).
//
// Inserting a mapping removes what it covers; a record it cuts on the left keeps its file offset, one it
// cuts on the right moves its file offset along by the trimmed amount (unless zeroed). A device written in
// 4 KiB pieces can hold millions of records, so the set is a list of sorted chunks (a flat, two-level
// B-tree): finding the place is a binary search over chunks and then within one, and an insert shifts at
// most one chunk.
import { type Mapping, backwardMappingTo, forwardMappingTo, mappingEnd } from './segment.js';

const CHUNK_MAX = 1024;

export class SegmentIndex {
  private chunks: Mapping[][] = [];
  private count = 0;

  constructor(initial?: Iterable<Mapping>) {
    if (initial) for (const m of initial) this.insert(m);
  }

  /** Number of records. */
  get size(): number {
    return this.count;
  }

  /** Overlays `m` (sectors) on the set; `m` is copied. */
  insert(m: Mapping): void {
    if (m.length <= 0) return;
    const rec: Mapping = { offset: m.offset, length: m.length, moffset: m.moffset, zeroed: m.zeroed, tag: m.tag };
    const end = rec.offset + rec.length;
    const chunks = this.chunks;
    const ci = this.chunkFor(rec.offset);
    if (ci === chunks.length) {
      // Everything already stored ends at or before rec.offset: the common sequential-write case.
      const last = chunks[chunks.length - 1];
      if (last && last.length < CHUNK_MAX) last.push(rec);
      else chunks.push([rec]);
      this.count++;
      return;
    }
    const chunk = chunks[ci]!;
    const i = firstEndingAfter(chunk, rec.offset);
    const replacement: Mapping[] = [];
    const first = chunk[i]!;
    if (first.offset < rec.offset) replacement.push(backwardMappingTo(first, rec.offset));
    replacement.push(rec);

    // Remove every record that starts before `end`, from (ci, i) on; they may span several chunks.
    let lastRemoved: Mapping | undefined;
    let removed = 0;
    let j = i;
    while (j < chunk.length && chunk[j]!.offset < end) lastRemoved = chunk[j++];
    removed += j - i;
    const spliceAt = i;
    const spliceCount = j - i;
    const nextCi = ci + 1;
    let emptied = 0;
    if (j === chunk.length) {
      while (nextCi + emptied < chunks.length) {
        const c = chunks[nextCi + emptied]!;
        let k = 0;
        while (k < c.length && c[k]!.offset < end) lastRemoved = c[k++];
        if (k === 0) break;
        removed += k;
        if (k === c.length) {
          emptied++;
          continue;
        }
        c.splice(0, k);
        break;
      }
    }
    if (lastRemoved && mappingEnd(lastRemoved) > end) replacement.push(forwardMappingTo(lastRemoved, end));
    chunk.splice(spliceAt, spliceCount, ...replacement);
    if (emptied) chunks.splice(nextCi, emptied);
    this.count += replacement.length - removed;
    if (chunk.length > CHUNK_MAX * 2) chunks.splice(ci, 1, chunk.slice(0, CHUNK_MAX), chunk.slice(CHUNK_MAX));
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
      const chunk = this.chunks[ci]!;
      for (let i = out.length === 0 ? firstEndingAfter(chunk, offset) : 0; i < chunk.length; i++) {
        let m = chunk[i]!;
        if (m.offset >= end) return out;
        if (m.offset < offset) m = forwardMappingTo(m, offset);
        if (mappingEnd(m) > end) m = backwardMappingTo(m, end);
        else m = { ...m };
        out.push(m);
      }
    }
    return out;
  }

  /** All records in logical order (live objects: do not modify). */
  *[Symbol.iterator](): IterableIterator<Mapping> {
    for (const chunk of this.chunks) yield* chunk;
  }

  /** A sorted copy of all records. */
  toArray(): Mapping[] {
    const out: Mapping[] = new Array(this.count);
    let k = 0;
    for (const chunk of this.chunks) for (const m of chunk) out[k++] = { ...m };
    return out;
  }

  /** Sectors covered by data (non-zeroed) records. */
  dataSectors(): number {
    let n = 0;
    for (const chunk of this.chunks) for (const m of chunk) if (!m.zeroed) n += m.length;
    return n;
  }

  /** Index of the first chunk whose last record ends after `offset` (chunks.length if none). */
  private chunkFor(offset: number): number {
    let lo = 0;
    let hi = this.chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.chunks[mid]!;
      if (mappingEnd(c[c.length - 1]!) > offset) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** Index of the first record in a sorted chunk that ends after `offset` (chunk.length if none). */
function firstEndingAfter(chunk: Mapping[], offset: number): number {
  let lo = 0;
  let hi = chunk.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (mappingEnd(chunk[mid]!) > offset) hi = mid;
    else lo = mid + 1;
  }
  return lo;
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
