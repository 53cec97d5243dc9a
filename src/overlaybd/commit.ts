// Sealing a layer: turns any LayerView (a writable pair, or an already sealed file) into the compact
// read-only LSMT file `overlaybd-commit` writes, byte for byte: header, the live data sorted by logical
// sector, the merged and padded index, trailer. The output is produced as an ordered stream of bounded
// chunks, so a layer is never held in memory; ZFile compression and the tar wrapper consume that stream.
//
// The recipe, kept literal for byte identity: data is copied in chunks of at most 64 sectors, each chunk
// its own record; zeroed records write no data and take the current data cursor as moffset; records are
// then merged left to right while contiguous in both spaces and the merged length stays below 16383;
// the index is padded with invalid records to a multiple of 256 (4 KiB), unless it already is one.
// The 64-sector chunks shape the index only: the data itself is read in runs of up to 1 MiB.
import { open, unlink } from 'node:fs/promises';
import { FormatError, ObdkitError } from '../util/errors.js';
import { FLAG_DATA, FLAG_HEADER, FLAG_SEALED, HT_SPACE, encodeHeaderTrailer, userTagBytes } from './lsmt-header.js';
import type { RandomAccess } from './io.js';
import type { LayerView } from './lsmt-layer.js';
import { INVALID_RECORD, MAX_LENGTH, type Mapping, RECORD_SIZE, SECTOR_SIZE, encodeMapping, mappingMend } from './segment.js';
import { NULL_UUID, isValidUuid, normalizeUuid } from './uuid.js';
import { TRANSFERABLE_CHUNKS, type TransferableChunks } from './zfile-writer.js';

/** Sectors per copied chunk, each its own record before merging (the reference's 32 KiB buffer). */
export const COMMIT_CHUNK_SECTORS = 64;
/** Records per 4 KiB of index: the padding unit. */
export const INDEX_PAGE_RECORDS = HT_SPACE / RECORD_SIZE;
const DATA_START_SECTOR = HT_SPACE / SECTOR_SIZE;
/**
 * Data chunks end where the output file crosses a multiple of this size, and one that lies inside a
 * single mapping is read with one pread. A consumer cutting the stream into batches of this size
 * (zfile-writer.ts does) therefore receives most of them whole and can move them instead of copying.
 */
export const COMMIT_IO_BYTES = 1024 * 1024;

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
 * own 4 KiB chunks; data chunks end on 1 MiB boundaries of the output). Every chunk is a fresh buffer
 * the generator never touches again, so a consumer may keep it or move it to another thread; the
 * returned generator says so with TRANSFERABLE_CHUNKS. The source must not be written to until the
 * generator is done (its mappings are taken once, at the start).
 */
export function commitLayer(source: LayerView, opts: CommitOptions = {}): AsyncGenerator<Buffer> & TransferableChunks {
  return Object.assign(commitChunks(source, opts), { [TRANSFERABLE_CHUNKS]: true as const });
}

async function* commitChunks(source: LayerView, opts: CommitOptions): AsyncGenerator<Buffer> {
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
  yield* dataChunks(source.data, mappings);

  // The records (with their final moffsets) come from the same walk the plan uses, so the index can
  // never disagree with the data just written.
  const dataSectors = packRecords(mappings, packer);
  const indexRecords = packer.finish();
  for (let i = 0; i < packer.pages.length; i += COMMIT_IO_BYTES / HT_SPACE) {
    const group = packer.pages.slice(i, i + COMMIT_IO_BYTES / HT_SPACE);
    yield group.length === 1 ? group[0]! : Buffer.concat(group);
  }
  yield encodeHeaderTrailer({
    ...common,
    flags: FLAG_DATA | FLAG_SEALED,
    indexOffset: (DATA_START_SECTOR + dataSectors) * SECTOR_SIZE,
    indexSize: indexRecords,
  });
}

/** A run of data to copy: `length` bytes at byte `at` of the source. */
interface Piece {
  at: number;
  length: number;
}

function readPiece(data: RandomAccess, p: Piece): Buffer {
  const buf = data.pread(p.at, p.length);
  if (buf.length !== p.length) {
    throw new FormatError(`source layer ends inside mapped data (${p.length} bytes wanted at ${p.at}, ${buf.length} there)`, {
      file: data.name, offset: p.at + buf.length,
    });
  }
  return buf;
}

/**
 * The data section: the live sectors of every data mapping in logical order, as chunks cut at
 * COMMIT_IO_BYTES boundaries of the output file (the section starts at byte 4096). A chunk inside one
 * source run is a single pread, yielded as is; a chunk spanning several is assembled from one pread each.
 */
function* dataChunks(data: RandomAccess, mappings: readonly Mapping[]): Generator<Buffer> {
  let pos = HT_SPACE;
  let pieces: Piece[] = [];
  let pieceBytes = 0;
  const assemble = (): Buffer => {
    if (pieces.length === 1) {
      const only = readPiece(data, pieces[0]!);
      pieces = [];
      pieceBytes = 0;
      return only;
    }
    const out = Buffer.allocUnsafe(pieceBytes);
    let off = 0;
    for (const p of pieces) off += readPiece(data, p).copy(out, off);
    pieces = [];
    pieceBytes = 0;
    return out;
  };
  for (const m of mappings) {
    if (m.length <= 0 || m.zeroed) continue;
    const bytes = m.length * SECTOR_SIZE;
    for (let done = 0; done < bytes; ) {
      const room = COMMIT_IO_BYTES - (pos % COMMIT_IO_BYTES);
      const n = Math.min(bytes - done, room);
      const piece = { at: m.moffset * SECTOR_SIZE + done, length: n };
      if (pieceBytes === 0 && n === room) {
        yield readPiece(data, piece);
      } else {
        // Neighbouring mappings often lie back to back in the source too: one read covers them.
        const last = pieces[pieces.length - 1];
        if (last && last.at + last.length === piece.at) last.length += n;
        else pieces.push(piece);
        pieceBytes += n;
        if (n === room) yield assemble();
      }
      pos += n;
      done += n;
    }
  }
  if (pieceBytes > 0) yield assemble();
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
