// The live index of the writable layer, shared by every FUSE worker thread.
// One Uint32 per 512-byte sector of the virtual disk lives in a SharedArrayBuffer (pages are only
// committed once touched): 0 = not written in this layer (fall through to the lowers), ZEROED =
// discarded (reads as zeros, occludes the lowers), anything else = the sector's position in the data
// file. Data positions are reserved with an atomic add, so workers write data in parallel; the index
// record append and the table update happen together under one lock so the order of records in the
// index file is the order in which the table changed, which is what a replay after a crash rebuilds.
// rw-pair.ts owns the file format and recovery; merged-backend.ts reads through this table.
import { closeSync, constants as fsc, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { ObdkitError } from '../../src/util/errors.js';
import { adviseRandom } from './syscalls.js';
import { encodeRecord, MAX_RECORD_LENGTH, RECORD_SIZE, SECTOR, type PairPaths, type UpperRecord } from './rw-pair.js';

export const UNMAPPED = 0;
export const ZEROED = 0xffffffff;
/** Zeroed records carry a meaningless moffset; the first data sector is always inside the file. */
const ZEROED_MOFFSET = 8;

/** Plain-data handle passed to worker threads (SharedArrayBuffers are shared, not copied). */
export interface SharedUpperState {
  paths: PairPaths;
  virtualSize: number;
  /**
   * Int32[0] = lock, Int32[1] = pending records, BigInt64[1] = data tail in sectors,
   * Int32[4] = data windows completed (writeback may start below it), Int32[5] = stop writeback.
   */
  ctrl: SharedArrayBuffer;
  table: SharedArrayBuffer;
  /** Pending index records, RECORD_SIZE bytes each. */
  pending: SharedArrayBuffer;
  /**
   * Descriptors opened once for all threads (see openSharedFds): one open file means one readahead
   * state, so a sequential stream split over several workers is still seen as sequential.
   */
  fds?: { data: number; index: number; dataRandom: number };
}

/**
 * Reads smaller than this go through a second descriptor of the data file with readahead off: a
 * cold 4 KiB random read would otherwise pull in ~28 KiB from the disk.
 */
const RANDOM_READ_BYTES = 32 * 1024;

/** Opens the pair once for every thread of this process; closeSharedFds() when the device is gone. */
export function openSharedFds(state: SharedUpperState): void {
  const dataRandom = openSync(state.paths.data, 'r');
  adviseRandom(dataRandom);
  state.fds = { data: openSync(state.paths.data, 'r+'), index: openSync(state.paths.index, fsc.O_WRONLY | fsc.O_APPEND), dataRandom };
}

export function closeSharedFds(state: SharedUpperState): void {
  if (!state.fds) return;
  closeSync(state.fds.data);
  closeSync(state.fds.index);
  closeSync(state.fds.dataRandom);
  delete state.fds;
}

/** Records held back before an index append: 64 KiB. */
const PENDING_RECORDS = 4096;
/**
 * Data is handed to the disk in windows of this many sectors (16 MiB) as soon as a window is full,
 * so an fsync after a large unpack finds most of it already written instead of starting from zero.
 * A separate thread (writeback-worker.ts) starts the writeback, so no request waits on the disk.
 */
export const WRITEBACK_WINDOW = 32768;
export const CTRL_WINDOWS = 4;
export const CTRL_STOP = 5;

export function createSharedState(paths: PairPaths, virtualSize: number, dataTail: number, records: UpperRecord[]): SharedUpperState {
  const sectors = Math.ceil(virtualSize / SECTOR);
  const ctrl = new SharedArrayBuffer(32);
  new BigInt64Array(ctrl)[1] = BigInt(dataTail);
  const table = new SharedArrayBuffer(sectors * 4);
  const t = new Uint32Array(table);
  for (const r of records) {
    const end = Math.min(r.offset + r.length, sectors);
    if (r.zeroed) t.fill(ZEROED, r.offset, end);
    else for (let s = r.offset, m = r.moffset; s < end; s++, m++) t[s] = m;
  }
  return { paths, virtualSize, ctrl, table, pending: new SharedArrayBuffer(PENDING_RECORDS * RECORD_SIZE) };
}

/** Per-thread view: its own file descriptors over the shared table. */
export class SharedUpper {
  readonly table: Uint32Array;
  private readonly lock: Int32Array;
  private readonly ctrl32: Int32Array;
  private readonly pendingCount: Int32Array;
  private readonly pending: Buffer;
  private readonly tail: BigInt64Array;
  private readonly dataFd: number;
  private readonly dataRandomFd: number;
  private readonly indexFd: number;
  private readonly ownFds: boolean;
  private readonly recordBuf = Buffer.alloc(RECORD_SIZE * 64);

  constructor(readonly state: SharedUpperState) {
    this.table = new Uint32Array(state.table);
    this.lock = new Int32Array(state.ctrl, 0, 1);
    this.ctrl32 = new Int32Array(state.ctrl);
    this.pendingCount = new Int32Array(state.ctrl, 4, 1);
    this.pending = Buffer.from(state.pending);
    this.tail = new BigInt64Array(state.ctrl, 8, 1);
    this.ownFds = !state.fds;
    this.dataFd = state.fds?.data ?? openSync(state.paths.data, 'r+');
    // O_APPEND: each record batch lands whole at the end, whichever thread writes it.
    this.indexFd = state.fds?.index ?? openSync(state.paths.index, fsc.O_WRONLY | fsc.O_APPEND);
    this.dataRandomFd = state.fds?.dataRandom ?? this.dataFd;
  }

  /** Reads `count` sectors of upper data starting at data-file sector `moffset` into `out`. */
  readData(moffset: number, out: Buffer): void {
    const fd = out.length < RANDOM_READ_BYTES ? this.dataRandomFd : this.dataFd;
    let done = 0;
    while (done < out.length) {
      const n = readSync(fd, out, done, out.length - done, moffset * SECTOR + done);
      if (n === 0) {
        throw new ObdkitError('EUPPER', 'upper data file ends before a mapped sector', {
          file: this.state.paths.data,
          offset: moffset * SECTOR + done,
        });
      }
      done += n;
    }
  }

  /** Writes whole sectors at logical sector `sector`. Data first, then the record. */
  write(sector: number, data: Buffer): void {
    const count = data.length / SECTOR;
    const pos = Number(Atomics.add(this.tail, 0, BigInt(count)));
    if (pos + count > 0xfffffffe) {
      throw new ObdkitError('EUPPERFULL', 'upper data file exceeds 2 TiB', { file: this.state.paths.data });
    }
    let done = 0;
    while (done < data.length) {
      done += writeSync(this.dataFd, data, done, data.length - done, pos * SECTOR + done);
    }
    this.commit(sector, count, pos, false);
    const window = Math.floor((pos + count) / WRITEBACK_WINDOW);
    if (window > Math.floor(pos / WRITEBACK_WINDOW)) this.windowsFilled(window);
  }

  /** Marks sectors as discarded: zeroed records, no data. */
  discard(sector: number, count: number): void {
    this.commit(sector, count, ZEROED_MOFFSET, true);
  }

  /** fsync semantics of the pair: the data a record points to is durable before the record. */
  flush(): void {
    this.appendRecords();
    fdatasyncSync(this.dataFd);
    fdatasyncSync(this.indexFd);
  }

  /**
   * Appends held-back records to the index file without syncing: after it, the index file lists
   * every write completed so far (a checkpoint reads it back).
   */
  appendRecords(): void {
    this.acquire();
    try {
      this.appendPending();
    } finally {
      this.release();
    }
  }

  /** Appends held-back records (any thread may close first: the buffer is shared). */
  close(): void {
    try {
      this.appendRecords();
    } finally {
      if (this.ownFds) {
        closeSync(this.dataFd);
        closeSync(this.indexFd);
      }
    }
  }

  /** Raises the completed-window mark to `window` and wakes the writeback thread. */
  private windowsFilled(window: number): void {
    for (;;) {
      const cur = Atomics.load(this.ctrl32, CTRL_WINDOWS);
      if (cur >= window || Atomics.compareExchange(this.ctrl32, CTRL_WINDOWS, cur, window) === cur) break;
    }
    Atomics.notify(this.ctrl32, CTRL_WINDOWS);
  }

  /** Caller holds the lock. */
  private appendPending(): void {
    const bytes = this.pendingCount[0]! * RECORD_SIZE;
    let done = 0;
    while (done < bytes) done += writeSync(this.indexFd, this.pending, done, bytes - done);
    this.pendingCount[0] = 0;
  }

  private commit(sector: number, count: number, moffset: number, zeroed: boolean): void {
    const pieces = Math.ceil(count / MAX_RECORD_LENGTH);
    const buf = pieces * RECORD_SIZE <= this.recordBuf.length ? this.recordBuf : Buffer.alloc(pieces * RECORD_SIZE);
    for (let p = 0; p < pieces; p++) {
      const at = p * MAX_RECORD_LENGTH;
      encodeRecord(
        { offset: sector + at, length: Math.min(MAX_RECORD_LENGTH, count - at), moffset: zeroed ? moffset : moffset + at, zeroed },
        buf,
        p * RECORD_SIZE,
      );
    }
    this.acquire();
    try {
      const bytes = pieces * RECORD_SIZE;
      if (this.pendingCount[0]! + pieces > PENDING_RECORDS) this.appendPending();
      if (pieces > PENDING_RECORDS) {
        let done = 0;
        while (done < bytes) done += writeSync(this.indexFd, buf, done, bytes - done);
      } else {
        buf.copy(this.pending, this.pendingCount[0]! * RECORD_SIZE, 0, bytes);
        this.pendingCount[0] = this.pendingCount[0]! + pieces;
      }
      const t = this.table;
      if (zeroed) t.fill(ZEROED, sector, sector + count);
      else for (let i = 0; i < count; i++) t[sector + i] = moffset + i;
    } finally {
      this.release();
    }
  }

  private acquire(): void {
    for (let spins = 0; Atomics.compareExchange(this.lock, 0, 0, 1) !== 0; spins++) {
      if (spins > 64) Atomics.wait(this.lock, 0, 1, 1);
    }
  }

  private release(): void {
    Atomics.store(this.lock, 0, 0);
    Atomics.notify(this.lock, 0, 1);
  }
}
