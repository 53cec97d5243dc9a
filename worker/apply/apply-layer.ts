// Applies one OCI/Docker layer (tar, tar+gzip or tar+zstd) onto a mounted filesystem so that the
// directory afterwards holds the full resulting state: whiteouts become real deletions, never
// `.wh.` files, because an overlaybd layer is a block diff of that filesystem. The converter in
// worker/ prepares the writable device and mounts it; this module only changes files under
// `rootDir`, and computes the layer's diffID (sha256 of the uncompressed tar) in the same pass.
//
// Semantics follow the OCI layer spec and containerd's applier: an entry replaces whatever is at its
// path unless both are directories (then only the attributes change); hard links point at entries
// of this layer or at lower files; ownership, setuid bits, xattrs and nanosecond mtimes are kept.
// Directory times are set last, after all of their children were written. Every path is confined
// to rootDir (root-walk.ts). Run as root: ownership and device nodes need it.
// File operations are synchronous: this runs on a worker thread of its own (apply-in-worker.ts),
// where a blocking call costs nothing, and a layer of thousands of small files spends most of its
// time in per-call overhead, which the thread pool round trip of the promise API would double.
import type { Stats } from 'node:fs';
import { chmodSync, closeSync, constants, ftruncateSync, lchownSync, linkSync, lstatSync, mkdirSync, openSync, rmSync, symlinkSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { ByteSource } from './byte-source.js';
import { openDecompressed, type LayerCompression } from './decompress.js';
import { cleanEntryPath, joinRel, resolveDir } from './root-walk.js';
import { lsetxattrIfAccepted, lutimesNs, mknod, S_IFBLK, S_IFCHR, S_IFIFO, type Timespec } from '../../src/util/syscalls.js';
import { TarReader, type TarEntry } from './tar-reader.js';
import { OPAQUE_MARKER, WHITEOUT_PREFIX, WrittenPaths, prune, pruneChildren } from './whiteouts.js';

export interface ApplyProgress {
  /** Tar entries processed (whiteouts included). */
  entries: number;
  /** Uncompressed tar bytes read so far. */
  tarBytes: number;
  /** Regular-file content bytes written so far. */
  bytes: number;
}

export interface ApplyOptions {
  onProgress?: (p: ApplyProgress) => void;
  /** Names the layer in errors (a digest or file name). */
  name?: string;
}

export interface ApplyResult {
  entries: number;
  /** Regular-file content bytes written. */
  bytes: number;
  /** Uncompressed tar size. */
  tarBytes: number;
  /** Whiteout and opaque markers applied. */
  whiteouts: number;
  /** `sha256:<hex>` of the uncompressed tar. */
  diffId: string;
  compression: LayerCompression;
}

interface Times {
  atime: Timespec;
  mtime: Timespec;
}

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

/** Filesystem block size assumed for holes (ext4 on the layer device uses 4 KiB). */
const HOLE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(HOLE_BLOCK);
/** Bytes gathered before writing: bounds memory per file while keeping writes large. */
const WRITE_SPAN = 256 << 10;

/**
 * Streams a file body into `fh`, skipping zero bytes block by block (4 KiB in file offsets) so a
 * block that holds only zeros stays a hole: it costs no blocks on the device and so no bytes in
 * the sealed layer, and reads back as zeros all the same.
 * Returns the file size.
 */
async function writeSparse(fd: number, body: AsyncIterable<Buffer>): Promise<number> {
  let pos = 0;
  let writtenEnd = 0;
  const writeAt = (buf: Buffer, position: number): void => {
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off, position + off);
    writtenEnd = position + buf.length;
  };
  const writeSpan = (span: Buffer): void => {
    let runStart = 0; // start (in span) of bytes not yet written
    let i = 0;
    while (i < span.length) {
      const end = Math.min(span.length, i + HOLE_BLOCK - ((pos + i) % HOLE_BLOCK));
      if (span.subarray(i, end).equals(ZERO_BLOCK.subarray(0, end - i))) {
        if (i > runStart) writeAt(span.subarray(runStart, i), pos + runStart);
        runStart = end;
      }
      i = end;
    }
    if (span.length > runStart) writeAt(span.subarray(runStart), pos + runStart);
    pos += span.length;
  };
  // Small chunks are gathered first, so zero blocks are seen whole whatever the stream's chunking.
  let pending: Buffer[] = [];
  let pendingLen = 0;
  for await (const chunk of body) {
    pending.push(chunk);
    pendingLen += chunk.length;
    if (pendingLen >= WRITE_SPAN) {
      writeSpan(pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen));
      pending = [];
      pendingLen = 0;
    }
  }
  if (pendingLen > 0) writeSpan(Buffer.concat(pending, pendingLen));
  // A trailing hole is not written at all: set the length explicitly.
  if (writtenEnd < pos) ftruncateSync(fd, pos);
  return pos;
}

function timespecFromNs(ns: bigint): Timespec {
  const sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  let s = sec;
  if (nsec < 0n) {
    nsec += 1_000_000_000n;
    s -= 1n;
  }
  return { sec: Number(s), nsec: Number(nsec) };
}

const EEXIST = 17;
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** One layer application: the state that must live across entries. */
class LayerApplier {
  readonly written = new WrittenPaths();
  /** Times each touched directory must end with: its own entry's, or what it had before we changed it. */
  private readonly dirTimes = new Map<string, Times>();
  /** Entry parent (as cleaned components joined) → resolved symlink-free directory. */
  private readonly dirCache = new Map<string, string>();
  entries = 0;
  bytes = 0;
  whiteouts = 0;

  constructor(
    private readonly root: string,
    private readonly reader: TarReader,
    private readonly name: string,
  ) {}

  /** Remembers a directory's current times before this layer first changes its contents. */
  readonly beforeChange = async (dirRel: string): Promise<void> => {
    if (this.dirTimes.has(dirRel)) return;
    const st = lstatSync(join(this.root, dirRel), { bigint: true });
    this.dirTimes.set(dirRel, { atime: timespecFromNs(st.atimeNs), mtime: timespecFromNs(st.mtimeNs) });
  };

  async apply(e: TarEntry): Promise<void> {
    const ctx = { file: this.name, offset: e.offset };
    const comps = cleanEntryPath(e.name, ctx);
    const times: Times = { atime: e.atime ?? e.mtime, mtime: e.mtime };
    if (comps.length === 0) {
      // The root itself (`./`): only its attributes can change.
      if (e.type !== 'dir') throw new ObdkitError('EAPPLY_ROOT', `entry ${JSON.stringify(e.name)} would replace the root with a ${e.type}`, ctx);
      await this.setAttributes(this.root, e, false);
      this.dirTimes.set('', times);
      return;
    }
    const base = comps[comps.length - 1]!;
    const parentComps = comps.slice(0, -1);
    if (base.startsWith(WHITEOUT_PREFIX)) {
      await this.whiteout(base, parentComps, e);
      return;
    }
    const parentRel = await this.parentDir(parentComps, e.name);
    const rel = joinRel(parentRel, base);
    const abs = join(this.root, rel);
    switch (e.type) {
      case 'dir': {
        await this.beforeChange(parentRel);
        await this.create(abs, () => mkdirSync(abs, { mode: 0o700 }), (st) => st.isDirectory());
        await this.setAttributes(abs, e, false);
        this.dirTimes.set(rel, times);
        break;
      }
      case 'file': {
        await this.beforeChange(parentRel);
        let fd = -1;
        await this.create(abs, () => {
          fd = openSync(abs, CREATE_FLAGS, 0o600);
        });
        if (fd < 0) throw new Error('unreachable: file not created');
        try {
          this.bytes += await writeSparse(fd, this.reader.body());
        } finally {
          closeSync(fd);
        }
        await this.setAttributes(abs, e, false);
        lutimesNs(abs, times.atime, times.mtime);
        break;
      }
      case 'link': {
        const target = await this.linkTarget(e, ctx);
        await this.beforeChange(parentRel);
        await this.create(abs, () => linkSync(target.abs, abs), (st) => st.ino === target.st.ino && st.dev === target.st.dev);
        await this.setAttributes(abs, e, target.st.isSymbolicLink());
        lutimesNs(abs, times.atime, times.mtime);
        break;
      }
      case 'symlink': {
        await this.beforeChange(parentRel);
        await this.create(abs, () => symlinkSync(e.linkname, abs));
        await this.setAttributes(abs, e, true);
        lutimesNs(abs, times.atime, times.mtime);
        break;
      }
      case 'char':
      case 'block':
      case 'fifo': {
        await this.beforeChange(parentRel);
        const kind = e.type === 'char' ? S_IFCHR : e.type === 'block' ? S_IFBLK : S_IFIFO;
        await this.create(abs, () => mknod(abs, kind, 0o600, e.devmajor, e.devminor));
        await this.setAttributes(abs, e, false);
        lutimesNs(abs, times.atime, times.mtime);
        break;
      }
    }
    this.written.add(rel);
  }

  /** The symlink-free parent directory of an entry, created as needed; cached per entry parent. */
  private async parentDir(comps: string[], entry: string): Promise<string> {
    const key = comps.join('/');
    const hit = this.dirCache.get(key);
    if (hit !== undefined) return hit;
    const rel = await resolveDir(this.root, comps, { create: true, beforeCreate: this.beforeChange, entry });
    if (rel === null) throw new Error('unreachable: resolveDir with create returned null');
    this.dirCache.set(key, rel);
    return rel;
  }

  /**
   * Runs `make` to create `abs`. If something is already there, it is kept when `keep` accepts it
   * (directory over directory, hard link already in place), else removed — a whole subtree if it
   * is a directory — and `make` runs again. Trying first saves a stat per entry on fresh trees.
   */
  private async create(abs: string, make: () => unknown, keep: (st: Stats) => boolean = () => false): Promise<void> {
    try {
      make();
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST' && !(err instanceof ObdkitError && (err.context.errno === EEXIST || err.code === 'EEXIST'))) throw err;
    }
    const st = lstatSync(abs);
    if (keep(st)) return;
    // Removing anything may invalidate resolved parent paths (a directory or symlink goes away).
    this.dirCache.clear();
    if (st.isDirectory()) rmSync(abs, { recursive: true, force: true });
    else unlinkSync(abs);
    make();
  }

  /** Owner, then mode (chown clears setuid bits), then xattrs (so a capability is set last). */
  private async setAttributes(abs: string, e: TarEntry, isSymlink: boolean): Promise<void> {
    lchownSync(abs, e.uid, e.gid);
    if (!isSymlink) chmodSync(abs, e.mode);
    // An attribute this filesystem or inode type refuses is not representable here: skipped.
    for (const [k, v] of e.xattrs) lsetxattrIfAccepted(abs, k, v);
  }

  private async linkTarget(e: TarEntry, ctx: { file: string; offset: number }): Promise<{ abs: string; st: Stats }> {
    const comps = cleanEntryPath(e.linkname, ctx);
    const missing = (): ObdkitError =>
      new ObdkitError('EAPPLY_LINK_TARGET', `hard link ${JSON.stringify(e.name)} points at missing ${JSON.stringify(e.linkname)}`, ctx);
    if (comps.length === 0) throw new ObdkitError('EAPPLY_LINK_TARGET', `hard link ${JSON.stringify(e.name)} points at the root`, ctx);
    const parentRel = await resolveDir(this.root, comps.slice(0, -1), { create: false, entry: e.linkname });
    if (parentRel === null) throw missing();
    const abs = join(this.root, joinRel(parentRel, comps[comps.length - 1]!));
    const st = lstatOrNull(abs);
    if (st === null) throw missing();
    if (st.isDirectory()) throw new ObdkitError('EAPPLY_LINK_TARGET', `hard link ${JSON.stringify(e.name)} points at a directory`, ctx);
    return { abs, st };
  }

  private async whiteout(base: string, parentComps: string[], e: TarEntry): Promise<void> {
    this.whiteouts++;
    const parentRel = await resolveDir(this.root, parentComps, { create: false, entry: e.name });
    if (parentRel === null) return; // nothing below to hide
    this.dirCache.clear();
    if (base === OPAQUE_MARKER) {
      await pruneChildren(this.root, parentRel, this.written, this);
      return;
    }
    // Other `.wh..wh.` names are aufs bookkeeping (hard-link dirs), not deletions.
    if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return;
    const target = base.slice(WHITEOUT_PREFIX.length);
    if (target === '' || target === '.' || target === '..') {
      throw new ObdkitError('EAPPLY_UNSAFE_PATH', `invalid whiteout ${JSON.stringify(e.name)}`, { file: this.name, offset: e.offset });
    }
    await prune(this.root, joinRel(parentRel, target), this.written, this);
  }

  /** Sets every touched directory's final times, after all of its children are in place. */
  async finishDirectories(): Promise<void> {
    const dirs = [...this.dirTimes.keys()].sort((a, b) => b.length - a.length);
    for (const rel of dirs) {
      const t = this.dirTimes.get(rel)!;
      try {
        lutimesNs(join(this.root, rel), t.atime, t.mtime);
      } catch (err) {
        // Removed later in this layer (replaced or whited out): nothing to stamp.
        if (err instanceof ObdkitError && err.context.errno === 2) continue;
        throw err;
      }
    }
  }
}

/**
 * Applies the layer read from `input` onto `rootDir`. Resolves once every entry is on disk and
 * the whole stream (end-of-archive padding included) was hashed into `diffId`.
 */
export async function applyLayer(input: Readable, rootDir: string, opts: ApplyOptions = {}): Promise<ApplyResult> {
  const name = opts.name ?? 'layer';
  const { stream, compression } = await openDecompressed(input, name);
  const src = new ByteSource(stream);
  const reader = new TarReader(src, name);
  const applier = new LayerApplier(rootDir, reader, name);
  try {
    for (;;) {
      const e = await reader.next();
      if (e === null) break;
      applier.entries++;
      try {
        await applier.apply(e);
      } catch (err) {
        if (err instanceof ObdkitError) throw err;
        throw new ObdkitError('EAPPLY', `cannot apply entry ${JSON.stringify(e.name)}: ${err instanceof Error ? err.message : String(err)}`, {
          file: name,
          offset: e.offset,
          errno: errnoCode(err),
        }, { cause: err });
      }
      opts.onProgress?.({ entries: applier.entries, tarBytes: src.position, bytes: applier.bytes });
    }
    await src.drain();
    await applier.finishDirectories();
  } finally {
    await src.close();
    stream.destroy();
  }
  return {
    entries: applier.entries,
    bytes: applier.bytes,
    tarBytes: src.pulled,
    whiteouts: applier.whiteouts,
    diffId: src.digest(),
    compression,
  };
}
