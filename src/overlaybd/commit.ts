// Sealing a layer: turns any LayerView (a writable pair, or an already sealed file) into the compact
// read-only LSMT file `overlaybd-commit` writes, byte for byte: header, the live data sorted by logical
// sector, the merged and padded index, trailer. The output is produced as an ordered stream of bounded
// chunks, so a layer is never held in memory; ZFile compression and the tar wrapper consume that stream.
//
// The recipe, kept literal for byte identity: data is copied in chunks of at most 64 sectors, each chunk
// its own record; zeroed records write no data and take the current data cursor as moffset; records are
// then merged left to right while contiguous in both spaces and the merged length stays below 16383;
// the index is padded with invalid records to a multiple of 256 (4 KiB), unless it already is one.
import { open, unlink } from 'node:fs/promises';
import { FormatError, ObdkitError } from '../util/errors.js';
import { FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SPACE, encodeHeaderTrailer, userTagBytes } from './lsmt-header.js';
import type { LayerView } from './lsmt-layer.js';
import { INVALID_RECORD, MAX_LENGTH, type Mapping, RECORD_SIZE, SECTOR_SIZE, encodeMapping, mappingMend } from './segment.js';
import { NULL_UUID, isValidUuid, normalizeUuid } from './uuid.js';

/** Sectors per copied chunk, each its own record before merging (the reference's 32 KiB buffer). */
export const COMMIT_CHUNK_SECTORS = 64;
/** Records per 4 KiB of index: the padding unit. */
export const INDEX_PAGE_RECORDS = HT_SPACE / RECORD_SIZE;
const DATA_START_SECTOR = HT_SPACE / SECTOR_SIZE;
/** Source reads and yielded chunks stay around this size (a multiple of the 64-sector chunk). */
const IO_BYTES = 1024 * 1024;
const IO_SECTORS = IO_BYTES / SECTOR_SIZE;

export interface CommitOptions {
  /** UUID of the new layer; the null UUID if absent or invalid. */
  uuid?: string;
  /** Overrides the source's parent UUID when valid. */
  parentUuid?: string;
  /** Commit message, at most 256 bytes. */
  userTag?: string | Buffer;
}

export interface CommitPlan {
  /** Bytes of the data section. */
  dataBytes: number;
  /** Index records after merging, before padding. */
  records: number;
  /** Index records as stored (with padding); the trailer's index_size. */
  indexRecords: number;
  /** Byte offset of the index (= 4096 + dataBytes). */
  indexOffset: number;
  /** Size of the whole committed file. */
  totalBytes: number;
}

/** Merges records left to right exactly as the reference does; the result lands in 4 KiB pages. */
class RecordPacker {
  private cur: Mapping | undefined;
  private page = Buffer.alloc(HT_SPACE);
  private inPage = 0;
  readonly pages: Buffer[] = [];
  count = 0;

  constructor(private readonly keep: boolean) {}

  push(m: Mapping): void {
    const c = this.cur;
    if (
      c &&
      c.offset + c.length === m.offset &&
      mappingMend(c) === m.moffset &&
      c.zeroed === m.zeroed &&
      c.tag === m.tag &&
      c.length + m.length < MAX_LENGTH
    ) {
      c.length += m.length;
      return;
    }
    if (c) this.emit(c);
    this.cur = { ...m };
  }

  /** Records so far after merging, the open one included. */
  get merged(): number {
    return this.count + (this.cur ? 1 : 0);
  }

  /** Flushes the open record and pads; returns the stored record count. */
  finish(): number {
    if (this.cur) this.emit(this.cur);
    this.cur = undefined;
    const padding = this.count % INDEX_PAGE_RECORDS === 0 ? 0 : INDEX_PAGE_RECORDS - (this.count % INDEX_PAGE_RECORDS);
    for (let i = 0; i < padding; i++) this.emitRaw(INVALID_RECORD);
    return this.count;
  }

  private emit(m: Mapping): void {
    if (this.keep) encodeMapping(m, this.page, this.inPage * RECORD_SIZE);
    this.advance();
  }

  private emitRaw(rec: Buffer): void {
    if (this.keep) rec.copy(this.page, this.inPage * RECORD_SIZE);
    this.advance();
  }

  private advance(): void {
    this.count++;
    if (++this.inPage === INDEX_PAGE_RECORDS) {
      if (this.keep) this.pages.push(this.page);
      this.page = Buffer.alloc(HT_SPACE);
      this.inPage = 0;
    }
  }
}

/** Feeds the committed records of `mappings` (sorted) to the packer; returns the data sectors used. */
function packRecords(mappings: readonly Mapping[], packer: RecordPacker): number {
  let c = DATA_START_SECTOR;
  for (const m of mappings) {
    if (m.length <= 0) continue;
    if (m.zeroed) {
      packer.push({ offset: m.offset, length: m.length, moffset: c, zeroed: true, tag: 0 });
      continue;
    }
    for (let k = 0; k < m.length; k += COMMIT_CHUNK_SECTORS) {
      const n = Math.min(COMMIT_CHUNK_SECTORS, m.length - k);
      packer.push({ offset: m.offset + k, length: n, moffset: c, zeroed: false, tag: 0 });
      c += n;
    }
  }
  return c - DATA_START_SECTOR;
}

/** Sizes of the committed file, computed from the mappings alone (no I/O): for progress and checks. */
export function planCommit(mappings: readonly Mapping[]): CommitPlan {
  checkSorted(mappings);
  const packer = new RecordPacker(false);
  const dataSectors = packRecords(mappings, packer);
  const merged = packer.merged;
  const indexRecords = packer.finish();
  const dataBytes = dataSectors * SECTOR_SIZE;
  return {
    dataBytes,
    records: merged,
    indexRecords,
    indexOffset: HT_SPACE + dataBytes,
    totalBytes: HT_SPACE + dataBytes + indexRecords * RECORD_SIZE + HT_SPACE,
  };
}

/**
 * The sealed layer's bytes, in file order, as chunks of at most 1 MiB (header and trailer are their
 * own 4 KiB chunks). Chunks are never reused, so a consumer may keep them. The source must not be
 * written to until the generator is done (its mappings are taken once, at the start).
 */
export async function* commitLayer(source: LayerView, opts: CommitOptions = {}): AsyncGenerator<Buffer> {
  const userTag = userTagBytes(opts.userTag);
  const uuid = opts.uuid !== undefined && isValidUuid(opts.uuid) ? normalizeUuid(opts.uuid) : NULL_UUID;
  const parentUuid =
    opts.parentUuid !== undefined && isValidUuid(opts.parentUuid)
      ? normalizeUuid(opts.parentUuid)
      : isValidUuid(source.parentUuid)
        ? normalizeUuid(source.parentUuid)
        : NULL_UUID;
  const mappings = source.mappings();
  checkSorted(mappings);
  const common = { virtualSize: source.virtualSize, uuid, parentUuid, userTag };
  yield encodeHeaderTrailer({ ...common, flags: FLAG_HEADER | FLAG_DATA | FLAG_SEALED });

  const packer = new RecordPacker(true);
  const data = source.data;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for (const m of mappings) {
    if (m.length <= 0 || m.zeroed) continue;
    for (let done = 0, n = 0; done < m.length; done += n) {
      n = Math.min(IO_SECTORS - pendingBytes / SECTOR_SIZE, m.length - done);
      const at = (m.moffset + done) * SECTOR_SIZE;
      const buf = data.pread(at, n * SECTOR_SIZE);
      if (buf.length !== n * SECTOR_SIZE) {
        throw new FormatError(`source layer ends inside the data of sectors [${m.offset + done}, +${n})`, { file: data.name, offset: at + buf.length });
      }
      pending.push(buf);
      pendingBytes += buf.length;
      if (pendingBytes >= IO_BYTES) {
        yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
      }
    }
  }
  if (pendingBytes) yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);

  // The records (with their final moffsets) come from the same walk the plan uses, so the index can
  // never disagree with the data just written.
  const dataSectors = packRecords(mappings, packer);
  const indexRecords = packer.finish();
  for (let i = 0; i < packer.pages.length; i += IO_BYTES / HT_SPACE) {
    const group = packer.pages.slice(i, i + IO_BYTES / HT_SPACE);
    yield group.length === 1 ? group[0]! : Buffer.concat(group);
  }
  yield encodeHeaderTrailer({
    ...common,
    flags: FLAG_DATA | FLAG_SEALED,
    indexOffset: (DATA_START_SECTOR + dataSectors) * SECTOR_SIZE,
    indexSize: indexRecords,
  });
}

/** Writes the committed layer to `outPath` (replacing it); a partial file is removed on failure. */
export async function commitLayerToFile(source: LayerView, outPath: string, opts: CommitOptions = {}): Promise<{ size: number }> {
  const fh = await open(outPath, 'w');
  let size = 0;
  let ok = false;
  try {
    for await (const chunk of commitLayer(source, opts)) {
      let done = 0;
      while (done < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, done, chunk.length - done, size + done);
        done += bytesWritten;
      }
      size += chunk.length;
    }
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await unlink(outPath).catch(() => undefined);
  }
  return { size };
}

function checkSorted(mappings: readonly Mapping[]): void {
  for (let i = 1; i < mappings.length; i++) {
    const a = mappings[i - 1]!;
    const b = mappings[i]!;
    if (a.offset + a.length > b.offset) {
      throw new ObdkitError('EINVAL', `mappings to commit are not sorted and disjoint at #${i} (sector ${b.offset} after [${a.offset}, +${a.length}))`);
    }
  }
}
