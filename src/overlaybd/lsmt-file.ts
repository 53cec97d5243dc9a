// Opening a sealed (read-only) LSMT layer: header | data | index | trailer, as `overlaybd-commit`
// writes it, or the `close_seal` form (header left as a writable data header, index appended in place).
// Validation is what the reference reader enforces, nothing more and nothing less, so that what we
// accept overlaybd accepts and the other way round; every rejection names the byte offset at fault.
// Input comes through a RandomAccess (io.ts), so ZFile and tar unwrapping happen below this module.
import { FormatError } from '../util/errors.js';
import type { RandomAccess } from './io.js';
import { type HeaderTrailer, HT_SPACE, OFF_FLAGS, OFF_INDEX_OFFSET, OFF_INDEX_SIZE, isDataFile, isHeader, isSealed, parseHeaderTrailer } from './lsmt-header.js';
import { type LayerRead, type LayerView, checkSectorAligned, readThroughMappings } from './lsmt-layer.js';
import { type Mapping, RECORD_SIZE, SECTOR_SIZE, decodeMapping, isInvalidRecord } from './segment.js';
import { SegmentIndex } from './segment-index.js';

/** The reference reader refuses read-only layers with more index records than this (padding included). */
export const MAX_RO_INDEX_SIZE = 1_000_000;
const DATA_START_SECTOR = HT_SPACE / SECTOR_SIZE;
const INDEX_READ_RECORDS = 65536; // read the index 1 MiB at a time

export interface SealedLayer extends LayerView {
  readonly header: HeaderTrailer;
  readonly trailer: HeaderTrailer;
  /** From the trailer, which is authoritative for sealed files. */
  readonly virtualSize: number;
  readonly uuid: string;
  readonly parentUuid: string;
  /** Commit message (user tag) as text. */
  readonly userTag: string;
  /** Valid records only, sorted; tags reset to 0. A fresh array on every access (kept compact inside). */
  readonly records: readonly Mapping[];
  readonly recordCount: number;
  /** The layer file itself; `moffset * 512` addresses into it. */
  readonly data: RandomAccess;
  mappings(): Mapping[];
  /** Records intersecting a sector range, trimmed to it. */
  lookup(offset: number, length: number): Mapping[];
  /** Bytes of the virtual disk as this layer alone holds them (512-aligned). */
  read(offset: number, length: number): LayerRead;
}

export function openSealedLayer(ra: RandomAccess): SealedLayer {
  const file = ra.name;
  const size = ra.size;
  if (size < 2 * HT_SPACE) {
    throw new FormatError(`too small for a sealed LSMT layer: ${size} bytes, need at least ${2 * HT_SPACE}`, { file, offset: size });
  }
  const header = parseHeaderTrailer(ra.pread(0, HT_SPACE), file, 0);
  if (!isHeader(header) || !isDataFile(header)) {
    throw new FormatError(`header flags 0x${header.flags.toString(16)} lack HEADER or DATA`, { file, offset: OFF_FLAGS, field: 'flags' });
  }
  const trailerAt = size - HT_SPACE;
  const trailer = parseHeaderTrailer(ra.pread(trailerAt, HT_SPACE), file, trailerAt);
  if (isHeader(trailer) || !isDataFile(trailer) || !isSealed(trailer)) {
    throw new FormatError(`trailer flags 0x${trailer.flags.toString(16)} are not a sealed data trailer (want DATA|SEALED, no HEADER)`, {
      file,
      offset: trailerAt + OFF_FLAGS,
      field: 'flags',
    });
  }
  if (trailer.indexSize > MAX_RO_INDEX_SIZE) {
    throw new FormatError(`index has ${trailer.indexSize} records, more than the ${MAX_RO_INDEX_SIZE} a read-only layer may have`, {
      file,
      offset: trailerAt + OFF_INDEX_SIZE,
      field: 'index_size',
    });
  }
  const indexOffset = trailer.indexOffset;
  if (indexOffset > trailerAt || trailer.indexSize * RECORD_SIZE > trailerAt - indexOffset) {
    throw new FormatError(`index [${indexOffset}, +${trailer.indexSize} records) runs past the trailer at ${trailerAt}`, {
      file,
      offset: trailerAt + OFF_INDEX_OFFSET,
      field: 'index_offset',
    });
  }
  const index = loadIndex(ra, indexOffset, trailer.indexSize);
  return {
    header,
    trailer,
    virtualSize: trailer.virtualSize,
    uuid: trailer.uuid,
    parentUuid: trailer.parentUuid,
    userTag: trailer.userTag.toString('utf8'),
    get records() {
      return index.toArray();
    },
    recordCount: index.size,
    data: ra,
    mappings: () => index.toArray(),
    lookup: (offset, length) => index.lookup(offset, length),
    read(offset, length) {
      checkSectorAligned(offset, length, `read from ${file}`);
      return readThroughMappings(ra, index.lookup(offset / SECTOR_SIZE, length / SECTOR_SIZE), offset, length);
    },
  };
}

/**
 * Reads, filters and checks the index exactly as the reference reader does. The records arrive sorted,
 * so filling the index is all appends.
 */
function loadIndex(ra: RandomAccess, indexOffset: number, count: number): SegmentIndex {
  const file = ra.name;
  const endSector = Math.floor(indexOffset / SECTOR_SIZE);
  const out = new SegmentIndex();
  let prev: Mapping | undefined;
  for (let first = 0; first < count; first += INDEX_READ_RECORDS) {
    const n = Math.min(INDEX_READ_RECORDS, count - first);
    const at = indexOffset + first * RECORD_SIZE;
    const buf = ra.pread(at, n * RECORD_SIZE);
    if (buf.length !== n * RECORD_SIZE) {
      throw new FormatError('index truncated', { file, offset: at + buf.length });
    }
    for (let k = 0; k < n; k++) {
      const pos = k * RECORD_SIZE;
      if (isInvalidRecord(buf, pos)) continue;
      const m = decodeMapping(buf, pos);
      const recAt = at + pos;
      m.tag = 0;
      if (prev && prev.offset + prev.length > m.offset) {
        throw new FormatError(
          `index record ${first + k} (sectors [${m.offset}, +${m.length})) is out of order or overlaps the previous one (ending at ${prev.offset + prev.length})`,
          { file, offset: recAt, field: 'index' },
        );
      }
      const ok = m.zeroed
        ? DATA_START_SECTOR <= m.moffset && m.moffset <= endSector
        : DATA_START_SECTOR <= m.moffset && m.moffset < endSector && m.moffset + m.length <= endSector;
      if (!ok) {
        throw new FormatError(
          `index record ${first + k} maps to file sectors [${m.moffset}, +${m.length}), outside the data section [${DATA_START_SECTOR}, ${endSector})`,
          { file, offset: recAt, field: 'moffset' },
        );
      }
      prev = m;
      // A zero-length record maps nothing; the reference reader keeps it, but it has no effect.
      if (m.length > 0) out.insert(m);
    }
  }
  return out;
}
