// Trimming a step's writable layer before it is sealed. A RUN or COPY rewrites many blocks with the
// bytes they already held (ext4 metadata rewritten unchanged, files copied over identical files);
// those blocks need not be stored again, because the lower stack already answers them. Compared per
// 4 KiB block (8 sectors, aligned to the virtual disk), a data mapping is split into the runs that
// really differ. Zeroed (discarded) ranges must stay, since they hide lower data; but where no lower
// maps the range at all, or a lower already reads zeros there, the zeroed record changes nothing.
// seal.ts feeds the trimmed view to the commit recipe in src/overlaybd/commit.ts.
import type { LayerView } from '../../src/overlaybd/lsmt-layer.js';
import type { LayerStack } from '../../src/overlaybd/stack.js';
import { MAX_LENGTH, SECTOR_SIZE, type Mapping } from '../../src/overlaybd/segment.js';
import { FormatError } from '../../src/util/errors.js';

/** Comparison unit: one ext4 block. */
export const DEDUP_BLOCK_SECTORS = 8;
/** Bytes read from each side per comparison round. */
const ROUND_SECTORS = 2048;

export interface DedupStats {
  /** Data bytes the step wrote. */
  writtenBytes: number;
  /** Data bytes dropped because the lowers already hold the same bytes. */
  identicalBytes: number;
  /** Zeroed bytes the step discarded. */
  zeroedBytes: number;
  /** Zeroed bytes dropped because nothing below was mapped (or it already read as zeros). */
  zeroedDroppedBytes: number;
}

export interface DedupResult {
  mappings: Mapping[];
  stats: DedupStats;
}

/** The mappings of `upper` that change what `lowers` show, in order. */
export function dedupAgainstLowers(upper: LayerView, lowers: LayerStack | null): DedupResult {
  const stats: DedupStats = { writtenBytes: 0, identicalBytes: 0, zeroedBytes: 0, zeroedDroppedBytes: 0 };
  const out: Mapping[] = [];
  for (const m of upper.mappings()) {
    if (m.length <= 0) continue;
    if (m.zeroed) {
      stats.zeroedBytes += m.length * SECTOR_SIZE;
      if (!lowers) {
        stats.zeroedDroppedBytes += m.length * SECTOR_SIZE;
        continue;
      }
      keepZeroedOverData(m, lowers, out, stats);
      continue;
    }
    stats.writtenBytes += m.length * SECTOR_SIZE;
    if (!lowers) {
      // With nothing below, a block differs unless it is all zeros (an unmapped sector reads as zeros).
      keepDiffering(m, upper, null, out, stats);
      continue;
    }
    keepDiffering(m, upper, lowers, out, stats);
  }
  return { mappings: out, stats };
}

/** Splits a zeroed mapping into the parts that hide lower data. */
function keepZeroedOverData(m: Mapping, lowers: LayerStack, out: Mapping[], stats: DedupStats): void {
  for (const p of lowers.resolve(m.offset * SECTOR_SIZE, m.length * SECTOR_SIZE)) {
    const start = p.offset / SECTOR_SIZE;
    const len = p.length / SECTOR_SIZE;
    if (p.layer === null || p.zeroed) {
      stats.zeroedDroppedBytes += p.length;
      continue;
    }
    pushZeroed(out, start, len);
  }
}

function pushZeroed(out: Mapping[], start: number, len: number): void {
  const last = out[out.length - 1];
  if (last && last.zeroed && last.offset + last.length === start && last.length + len <= MAX_LENGTH) {
    last.length += len;
    return;
  }
  for (let done = 0; done < len; ) {
    const n = Math.min(MAX_LENGTH, len - done);
    out.push({ offset: start + done, length: n, moffset: 0, zeroed: true, tag: 0 });
    done += n;
  }
}

/** Keeps the 4 KiB blocks of a data mapping whose bytes differ from the lowers' (or from zeros). */
function keepDiffering(m: Mapping, upper: LayerView, lowers: LayerStack | null, out: Mapping[], stats: DedupStats): void {
  const end = m.offset + m.length;
  let runStart = -1;
  const flush = (until: number): void => {
    if (runStart < 0) return;
    out.push({ offset: runStart, length: until - runStart, moffset: m.moffset + (runStart - m.offset), zeroed: false, tag: 0 });
    runStart = -1;
  };
  for (let pos = m.offset; pos < end; ) {
    const n = Math.min(ROUND_SECTORS, end - pos);
    const at = (m.moffset + (pos - m.offset)) * SECTOR_SIZE;
    const mine = upper.data.pread(at, n * SECTOR_SIZE);
    if (mine.length !== n * SECTOR_SIZE) {
      throw new FormatError(`writable layer ends inside the data of sectors [${pos}, +${n})`, { file: upper.data.name, offset: at + mine.length });
    }
    const theirs = lowers ? lowers.read(pos * SECTOR_SIZE, n * SECTOR_SIZE) : null;
    // Walk block by block, cutting at absolute 8-sector boundaries so the unit matches ext4 blocks.
    for (let s = pos; s < pos + n; ) {
      const blockEnd = Math.min(pos + n, (Math.floor(s / DEDUP_BLOCK_SECTORS) + 1) * DEDUP_BLOCK_SECTORS);
      const a = (s - pos) * SECTOR_SIZE;
      const b = (blockEnd - pos) * SECTOR_SIZE;
      const same = theirs ? mine.subarray(a, b).equals(theirs.subarray(a, b)) : isZero(mine, a, b);
      if (same) {
        stats.identicalBytes += b - a;
        flush(s);
      } else if (runStart < 0) {
        runStart = s;
      }
      s = blockEnd;
    }
    pos += n;
  }
  flush(end);
}

function isZero(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return false;
  return true;
}

/** A LayerView that shows only `mappings` (which must address `base.data`). */
export function filteredView(base: LayerView, mappings: Mapping[]): LayerView {
  return {
    mappings: () => mappings,
    data: base.data,
    virtualSize: base.virtualSize,
    parentUuid: base.parentUuid,
  };
}
