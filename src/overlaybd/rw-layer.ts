// The writable layer in overlaybd's append-only form: a data file (4 KiB header, then sectors in the
// order they were written) and an index file (4 KiB header, then one 16-byte record per write or discard).
// Nothing is ever overwritten in place: a rewrite appends again and the newest record wins, so a crash
// leaves a log that replays up to its last complete record. `overlaybd-create data index N` and the
// overlaybd device daemon produce and consume the same pair; commit.ts compacts it into a read-only
// layer, and `seal()` turns the data file into one in place (lsmt-file.ts opens both results).
//
// The sparse form (`overlaybd-create -s`: the disk in place inside the data file, no index) opens
// read-only, enough to read and commit it.
//
// All I/O is synchronous: the block device serves requests from worker threads with blocking calls.
// Data bytes are written before the record that references them, so a record that made it to disk
// without its data is recognisable (it points past the data file's end) and dropped on reopen.
import { closeSync, fstatSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { FormatError, ObdkitError } from '../util/errors.js';
import type { RandomAccess } from './io.js';
import {
  type HeaderTrailer,
  FLAG_DATA,
  FLAG_HEADER,
  FLAG_SEALED,
  HT_SPACE,
  OFF_FLAGS,
  OFF_INDEX_OFFSET,
  OFF_VIRTUAL_SIZE,
  encodeHeaderTrailer,
  isDataFile,
  isHeader,
  isSealed,
  isSparseRw,
  parseHeaderTrailer,
} from './lsmt-header.js';
import { MAX_RO_INDEX_SIZE } from './lsmt-file.js';
import { type LayerRead, type LayerView, checkSectorAligned, readThroughMappings } from './lsmt-layer.js';
import { INVALID_RECORD, MAX_LENGTH, type Mapping, RECORD_SIZE, SECTOR_SIZE, decodeMapping, encodeMapping, isInvalidRecord } from './segment.js';
import { SegmentIndex } from './segment-index.js';
import { dataExtents } from './rw-sparse.js';
import { NULL_UUID, isValidUuid, normalizeUuid, randomUuid } from './uuid.js';

/** Writes are cut into pieces of at most this many bytes, one record each, as the reference does. */
export const MAX_IO_SIZE = 4 * 1024 * 1024;
/** The reference refuses writable indexes with more records than this. */
export const MAX_RW_INDEX_SIZE = 128_000_000;
const DATA_START_SECTOR = HT_SPACE / SECTOR_SIZE;
const INDEX_READ_RECORDS = 65536;

export interface RwCreateOptions {
  /** Bytes of the virtual disk. */
  virtualSize: number;
  parentUuid?: string;
  /** Defaults to a random UUID, as `overlaybd-create` does. */
  uuid?: string;
}

export interface RwOpenOptions {
  /** Open without write access: nothing is truncated or repaired on disk. */
  readOnly?: boolean;
}

/** What reopening found beyond the complete, usable records. */
export interface RwRecovery {
  /** Bytes of a torn last index record, ignored (and cut off unless read-only). */
  partialIndexBytes: number;
  /** Records pointing past the end of the data file (their data never landed), dropped. */
  droppedRecords: number;
  /** Bytes of a torn last data sector, ignored (and cut off unless read-only). */
  partialDataBytes: number;
}

export class RwLayer implements LayerView {
  readonly data: RandomAccess;
  readonly uuid: string;
  readonly parentUuid: string;
  readonly readOnly: boolean;
  readonly recovery: RwRecovery;
  private vsize: number;
  private readonly index = new SegmentIndex();
  private dataEnd: number;
  private indexEnd: number;
  private dataFd: number;
  private indexFd: number;
  private readonly record = Buffer.alloc(RECORD_SIZE);

  private constructor(
    readonly dataPath: string,
    readonly indexPath: string,
    init: { dataFd: number; indexFd: number; dataEnd: number; indexEnd: number; vsize: number; uuid: string; parentUuid: string; readOnly: boolean; recovery: RwRecovery },
  ) {
    this.dataFd = init.dataFd;
    this.indexFd = init.indexFd;
    this.dataEnd = init.dataEnd;
    this.indexEnd = init.indexEnd;
    this.vsize = init.vsize;
    this.uuid = init.uuid;
    this.parentUuid = init.parentUuid;
    this.readOnly = init.readOnly;
    this.recovery = init.recovery;
    const self = this;
    this.data = {
      name: dataPath,
      get size() {
        return self.dataEnd;
      },
      pread: (offset, length) => self.preadData(offset, length),
    };
  }

  /** Creates a new pair; both files must not exist yet. */
  static create(dataPath: string, indexPath: string, opts: RwCreateOptions): RwLayer {
    if (!Number.isSafeInteger(opts.virtualSize) || opts.virtualSize < 0 || opts.virtualSize % SECTOR_SIZE !== 0) {
      throw new RangeError(`virtual size ${opts.virtualSize} is not a non-negative multiple of ${SECTOR_SIZE}`);
    }
    const uuid = opts.uuid !== undefined ? normalizeUuid(opts.uuid) : randomUuid();
    const parentUuid = opts.parentUuid !== undefined && isValidUuid(opts.parentUuid) ? normalizeUuid(opts.parentUuid) : NULL_UUID;
    const common = { virtualSize: opts.virtualSize, uuid, parentUuid };
    let dataFd = -1;
    let indexFd = -1;
    try {
      dataFd = openSync(dataPath, 'wx+');
      indexFd = openSync(indexPath, 'wx+');
      writeFully(dataFd, encodeHeaderTrailer({ ...common, flags: FLAG_HEADER | FLAG_DATA }), 0, dataPath);
      writeFully(indexFd, encodeHeaderTrailer({ ...common, flags: FLAG_HEADER, indexOffset: HT_SPACE }), 0, indexPath);
    } catch (err) {
      if (dataFd >= 0) closeSync(dataFd);
      if (indexFd >= 0) closeSync(indexFd);
      throw err;
    }
    return new RwLayer(dataPath, indexPath, {
      dataFd,
      indexFd,
      dataEnd: HT_SPACE,
      indexEnd: HT_SPACE,
      vsize: opts.virtualSize,
      uuid,
      parentUuid,
      readOnly: false,
      recovery: { partialIndexBytes: 0, droppedRecords: 0, partialDataBytes: 0 },
    });
  }

  /** Opens an existing pair, replaying its index; see RwRecovery for what a cut pair yields. */
  static open(dataPath: string, indexPath: string, opts: RwOpenOptions = {}): RwLayer {
    const readOnly = opts.readOnly ?? false;
    const flags = readOnly ? 'r' : 'r+';
    const dataFd = openSync(dataPath, flags);
    let indexFd = -1;
    try {
      indexFd = openSync(indexPath, flags);
      return RwLayer.load(dataPath, indexPath, dataFd, indexFd, readOnly);
    } catch (err) {
      closeSync(dataFd);
      if (indexFd >= 0) closeSync(indexFd);
      throw err;
    }
  }

  private static load(dataPath: string, indexPath: string, dataFd: number, indexFd: number, readOnly: boolean): RwLayer {
    const dataSize = fstatSync(dataFd).size;
    const indexSize = fstatSync(indexFd).size;
    // Without a whole header there is no layer to recover (and nowhere sane to append).
    if (dataSize < HT_SPACE) throw new FormatError(`data file truncated inside its ${HT_SPACE}-byte header`, { file: dataPath, offset: dataSize });
    const dataHeader = parseHeaderTrailer(readBlock(dataFd, 0, HT_SPACE), dataPath, 0);
    if (!isHeader(dataHeader) || !isDataFile(dataHeader)) {
      throw new FormatError(`data file header flags 0x${dataHeader.flags.toString(16)} lack HEADER or DATA`, { file: dataPath, offset: OFF_FLAGS, field: 'flags' });
    }
    if (isSparseRw(dataHeader)) {
      if (!readOnly) {
        throw new ObdkitError('ENOTSUP', 'sparse writable layers can only be opened read-only', { file: dataPath, offset: OFF_FLAGS, field: 'flags' });
      }
      return RwLayer.loadSparse(dataPath, indexPath, dataFd, indexFd, dataHeader, dataSize);
    }
    if (indexSize < HT_SPACE) throw new FormatError(`index file truncated inside its ${HT_SPACE}-byte header`, { file: indexPath, offset: indexSize });
    const ih = parseHeaderTrailer(readBlock(indexFd, 0, HT_SPACE), indexPath, 0);
    if (!isHeader(ih) || isDataFile(ih) || isSealed(ih)) {
      throw new FormatError(`index file header flags 0x${ih.flags.toString(16)} are not an unsealed index header`, { file: indexPath, offset: OFF_FLAGS, field: 'flags' });
    }
    if (ih.indexOffset !== HT_SPACE) {
      throw new FormatError(`index file says its records start at ${ih.indexOffset}, must be ${HT_SPACE}`, { file: indexPath, offset: OFF_INDEX_OFFSET, field: 'index_offset' });
    }
    if (ih.virtualSize % SECTOR_SIZE !== 0) {
      throw new FormatError(`virtual size ${ih.virtualSize} is not a multiple of ${SECTOR_SIZE}`, { file: indexPath, offset: OFF_VIRTUAL_SIZE, field: 'virtual_size' });
    }
    const dataSectors = Math.floor(dataSize / SECTOR_SIZE);
    const count = Math.floor((indexSize - HT_SPACE) / RECORD_SIZE);
    if (count > MAX_RW_INDEX_SIZE) {
      throw new FormatError(`index file holds ${count} records, more than ${MAX_RW_INDEX_SIZE}`, { file: indexPath, offset: HT_SPACE });
    }
    const recovery: RwRecovery = {
      partialIndexBytes: indexSize - HT_SPACE - count * RECORD_SIZE,
      droppedRecords: 0,
      partialDataBytes: dataSize - dataSectors * SECTOR_SIZE,
    };
    const layer = new RwLayer(dataPath, indexPath, {
      dataFd,
      indexFd,
      dataEnd: dataSectors * SECTOR_SIZE,
      indexEnd: HT_SPACE + count * RECORD_SIZE,
      vsize: ih.virtualSize,
      uuid: ih.uuid,
      parentUuid: ih.parentUuid,
      readOnly,
      recovery,
    });
    const dropped: number[] = [];
    for (let first = 0; first < count; first += INDEX_READ_RECORDS) {
      const n = Math.min(INDEX_READ_RECORDS, count - first);
      const buf = readBlock(indexFd, HT_SPACE + first * RECORD_SIZE, n * RECORD_SIZE);
      for (let k = 0; k < n; k++) {
        const pos = k * RECORD_SIZE;
        if (isInvalidRecord(buf, pos)) continue;
        const m = decodeMapping(buf, pos);
        m.tag = 0;
        const inRange = m.zeroed
          ? DATA_START_SECTOR <= m.moffset && m.moffset <= dataSectors
          : DATA_START_SECTOR <= m.moffset && m.moffset + m.length <= dataSectors;
        if (!inRange) {
          dropped.push(HT_SPACE + (first + k) * RECORD_SIZE);
          continue;
        }
        layer.index.insert(m);
      }
    }
    recovery.droppedRecords = dropped.length;
    if (!readOnly) {
      // Leave a pair the reference tools accept too: whole records only, whole sectors only, and no
      // record that would come back to life once appended data reaches the sectors it points to.
      for (const at of dropped) writeFully(indexFd, INVALID_RECORD, at, indexPath);
      if (recovery.partialIndexBytes) ftruncateSync(indexFd, layer.indexEnd);
      if (recovery.partialDataBytes) ftruncateSync(dataFd, layer.dataEnd);
    }
    return layer;
  }

  /**
   * A sparse pair (`overlaybd-create -s`): the data file holds the virtual disk in place after its
   * header, and the mappings are its allocated extents, cut at 16383 sectors as the reference does.
   * Discards were holes punched, so they fall through to lower layers after a reopen.
   */
  private static loadSparse(dataPath: string, indexPath: string, dataFd: number, indexFd: number, header: HeaderTrailer, dataSize: number): RwLayer {
    const layer = new RwLayer(dataPath, indexPath, {
      dataFd,
      indexFd,
      dataEnd: dataSize,
      indexEnd: 0,
      vsize: header.virtualSize,
      uuid: header.uuid,
      parentUuid: header.parentUuid,
      readOnly: true,
      recovery: { partialIndexBytes: 0, droppedRecords: 0, partialDataBytes: 0 },
    });
    for (const [begin, end] of dataExtents(dataFd, HT_SPACE, dataPath)) {
      let offset = Math.floor((begin - HT_SPACE) / SECTOR_SIZE);
      let moffset = Math.floor(begin / SECTOR_SIZE);
      for (let left = Math.floor((end - begin) / SECTOR_SIZE); left > 0; ) {
        const n = Math.min(left, MAX_LENGTH);
        layer.index.insert({ offset, length: n, moffset, zeroed: false, tag: 0 });
        offset += n;
        moffset += n;
        left -= n;
      }
    }
    return layer;
  }

  get virtualSize(): number {
    return this.vsize;
  }

  /** Number of live records (what a commit starts from, before chunking and merging). */
  get recordCount(): number {
    return this.index.size;
  }

  /** Writes `buf` at byte `offset` of the virtual disk (both 512-aligned). */
  write(offset: number, buf: Buffer): void {
    this.checkWritable();
    checkSectorAligned(offset, buf.length, `write to ${this.dataPath}`);
    this.checkInside(offset, buf.length);
    for (let done = 0; done < buf.length; done += MAX_IO_SIZE) {
      const piece = buf.subarray(done, Math.min(buf.length, done + MAX_IO_SIZE));
      const pos = this.dataEnd;
      writeFully(this.dataFd, piece, pos, this.dataPath);
      this.dataEnd = pos + piece.length;
      this.append({ offset: (offset + done) / SECTOR_SIZE, length: piece.length / SECTOR_SIZE, moffset: pos / SECTOR_SIZE, zeroed: false, tag: 0 });
    }
  }

  /** Marks a byte range as zeros that hide lower layers (what a discard/UNMAP of the device does). */
  discard(offset: number, length: number): void {
    this.checkWritable();
    checkSectorAligned(offset, length, `discard on ${this.dataPath}`);
    this.checkInside(offset, length);
    const moffset = this.dataEnd / SECTOR_SIZE;
    for (let s = offset / SECTOR_SIZE, left = length / SECTOR_SIZE; left > 0; ) {
      const n = Math.min(left, MAX_LENGTH);
      this.append({ offset: s, length: n, moffset, zeroed: true, tag: 0 });
      s += n;
      left -= n;
    }
  }

  /** This layer's bytes for a range; holes (no record here) read as zeros and are listed. */
  read(offset: number, length: number): LayerRead {
    checkSectorAligned(offset, length, `read from ${this.dataPath}`);
    return readThroughMappings(this.data, this.index.lookup(offset / SECTOR_SIZE, length / SECTOR_SIZE), offset, length);
  }

  /** Records intersecting a sector range, trimmed to it. */
  lookup(offset: number, length: number): Mapping[] {
    return this.index.lookup(offset, length);
  }

  mappings(): Mapping[] {
    return this.index.toArray();
  }

  /** Changes the virtual size in both headers, in place (the only non-append write). */
  setVirtualSize(virtualSize: number): void {
    this.checkWritable();
    if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize % SECTOR_SIZE !== 0) {
      throw new RangeError(`virtual size ${virtualSize} is not a non-negative multiple of ${SECTOR_SIZE}`);
    }
    const v = Buffer.alloc(8);
    v.writeUInt32LE(virtualSize % 2 ** 32, 0);
    v.writeUInt32LE(Math.floor(virtualSize / 2 ** 32), 4);
    writeFully(this.dataFd, v, OFF_VIRTUAL_SIZE, this.dataPath);
    writeFully(this.indexFd, v, OFF_VIRTUAL_SIZE, this.indexPath);
    this.vsize = virtualSize;
  }

  /**
   * Turns the data file into a read-only layer in place, without compaction (overlaybd's `close_seal`,
   * `overlaybd-commit --seal`): the live records, sorted, are appended after the data and padded with
   * zeros to a whole sector, then a trailer (exact record count; uuid, parent and virtual size from the
   * data file's header). The layer is closed afterwards; open the data file with openSealedLayer.
   * The index file is left as it was.
   */
  seal(): void {
    this.checkWritable();
    const count = this.index.size;
    if (count > MAX_RO_INDEX_SIZE) {
      throw new ObdkitError('ETOOBIG', `${count} records: a sealed layer may hold at most ${MAX_RO_INDEX_SIZE}`, { file: this.dataPath });
    }
    const header = parseHeaderTrailer(readBlock(this.dataFd, 0, HT_SPACE), this.dataPath, 0);
    const indexOffset = this.dataEnd;
    let pos = indexOffset;
    const batch = Buffer.alloc(INDEX_READ_RECORDS * RECORD_SIZE);
    let inBatch = 0;
    for (const m of this.index) {
      encodeMapping(m, batch, inBatch * RECORD_SIZE);
      if (++inBatch === INDEX_READ_RECORDS) {
        writeFully(this.dataFd, batch, pos, this.dataPath);
        pos += batch.length;
        inBatch = 0;
      }
    }
    const tail = Math.ceil((inBatch * RECORD_SIZE) / SECTOR_SIZE) * SECTOR_SIZE;
    if (tail) {
      batch.fill(0, inBatch * RECORD_SIZE, tail);
      writeFully(this.dataFd, batch.subarray(0, tail), pos, this.dataPath);
      pos += tail;
    }
    const trailer = encodeHeaderTrailer({
      flags: FLAG_DATA | FLAG_SEALED,
      indexOffset,
      indexSize: count,
      virtualSize: header.virtualSize,
      uuid: header.uuid,
      parentUuid: header.parentUuid,
    });
    writeFully(this.dataFd, trailer, pos, this.dataPath);
    this.dataEnd = pos + trailer.length;
    fsyncSync(this.dataFd);
    this.close();
  }

  /** Makes everything written so far durable: data first, then the records pointing to it. */
  fsync(): void {
    fsyncSync(this.dataFd);
    fsyncSync(this.indexFd);
  }

  close(): void {
    if (this.dataFd >= 0) closeSync(this.dataFd);
    if (this.indexFd >= 0) closeSync(this.indexFd);
    this.dataFd = -1;
    this.indexFd = -1;
  }

  private append(m: Mapping): void {
    encodeMapping(m, this.record);
    writeFully(this.indexFd, this.record, this.indexEnd, this.indexPath);
    this.indexEnd += RECORD_SIZE;
    this.index.insert(m);
  }

  private preadData(offset: number, length: number): Buffer {
    const end = Math.min(this.dataEnd, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    return readBlock(this.dataFd, offset, end - offset);
  }

  private checkWritable(): void {
    if (this.dataFd < 0) throw new ObdkitError('ECLOSED', 'writable layer is closed', { file: this.dataPath });
    if (this.readOnly) throw new ObdkitError('EROFS', 'writable layer was opened read-only', { file: this.dataPath });
  }

  private checkInside(offset: number, length: number): void {
    if (offset + length > this.vsize) {
      throw new RangeError(`range [${offset}, ${offset + length}) is beyond the virtual size ${this.vsize} of ${this.dataPath}`);
    }
  }
}

function writeFully(fd: number, buf: Buffer, position: number, name: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = writeSync(fd, buf, done, buf.length - done, position + done);
    if (n <= 0) throw new ObdkitError('EIO', 'write made no progress', { file: name, offset: position + done });
    done += n;
  }
}

/** Reads up to `length` bytes at `position`; shorter only at end of file. */
function readBlock(fd: number, position: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? out : out.subarray(0, done);
}
