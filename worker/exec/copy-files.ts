// COPY (and the local-file half of ADD) into a rootfs directory with Docker's semantics: a source
// directory contributes its contents, several sources need a directory destination, modes, mtimes,
// symlinks, hardlinks and xattrs are kept, `--chown`/`--chmod` override owner and mode.
//
// Safety: source paths are resolved inside the source root (a symlink pointing out of the build
// context lands on a missing path inside it, never on a host file); inside copied trees symlinks
// are copied as links, never followed. Destination paths are resolved inside the destination root;
// each entry is created with O_EXCL|O_NOFOLLOW inside a parent directory held open through
// openat2(RESOLVE_IN_ROOT) (dirfd.ts), and directory metadata is set through such a handle, so a
// path component swapped for a symlink mid-copy cannot redirect a write outside the root.
// archive.ts (ADD of a tar) and remote.ts (ADD of a URL) reuse the placement helpers here.
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  chmodSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { join, posix } from 'node:path';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { mkdirAllInRoot, resolveInRoot } from './root-path.js';
import { resolveChown } from './user-db.js';
import { readXattrs, writeXattrs, writeXattrsFd } from './xattr.js';
import { openDirInRoot } from './dirfd.js';
import { makeNode, splitDev } from './mknod.js';
import { parseChmod, type ModeFn } from './chmod-spec.js';

export interface Owner {
  uid: number;
  gid: number;
}

export interface CopyOptions {
  /** The root sources are read from: the build context or another stage's rootfs. */
  srcRoot: string;
  /** Paths inside srcRoot, globs already expanded by the caller. */
  sources: string[];
  /** The rootfs written into. */
  destRoot: string;
  /** Destination inside destRoot; a trailing `/` makes it a directory. */
  dest: string;
  /** `--chown` spec, resolved against destRoot's /etc/passwd and /etc/group. */
  chown?: string;
  /** `--chmod`: a number (0o755) or the text as written (`0755`, `u+x`), applied to every copied file and directory. */
  chmod?: number | string;
  /** Keep source owners (COPY --from a stage); otherwise files are 0:0 like context files. */
  preserveOwnership?: boolean;
  /** A directory source contributes its contents (default, Dockerfile COPY) rather than itself. */
  dirContents?: boolean;
  /** Follow a symlink named as the source itself (default true, inside srcRoot); false copies the link. */
  followSymlinks?: boolean;
}

/** Copies `sources` to `dest`. Synchronous: call it from a worker thread (copy-worker.ts) in the daemon. */
export function copyFiles(opts: CopyOptions): void {
  if (opts.sources.length === 0) throw new ObdkitError('ECOPY', 'COPY has no source', { dest: opts.dest });
  const owner = opts.chown !== undefined ? resolveChown(opts.destRoot, opts.chown) : undefined;
  const ctx: PlaceContext = { destRoot: opts.destRoot, hardlinks: new Map(), preserveOwnership: opts.preserveOwnership ?? false };
  if (owner !== undefined) ctx.owner = owner;
  if (opts.chmod !== undefined) ctx.chmod = parseChmod(opts.chmod);
  const destInner = posix.normalize('/' + opts.dest);
  const destHost = resolveInRoot(opts.destRoot, destInner);
  const destIsDir = opts.dest.endsWith('/') || opts.dest.endsWith('/.') || isDirectory(destHost);
  if (opts.sources.length > 1 && !destIsDir) {
    throw new ObdkitError('ECOPY', 'when using COPY with more than one source file, the destination must be a directory and end with a /', {
      dest: opts.dest,
    });
  }
  for (const source of opts.sources) {
    const srcHost = resolveInRoot(opts.srcRoot, source, { noFollowFinal: opts.followSymlinks === false });
    let st: Stats;
    try {
      st = lstatSync(srcHost);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') {
        throw new ObdkitError('ENOENT', `source ${source} not found in the build context`, { file: source });
      }
      throw err;
    }
    if (st.isDirectory() && opts.dirContents !== false) {
      // The destination directory keeps its own metadata; only the contents are copied.
      ensureDir(ctx, destInner);
      copyTreeContents(ctx, srcHost, destInner);
    } else {
      const target = destIsDir ? posix.join(destInner, posix.basename(posix.normalize('/' + source))) : destInner;
      ensureDir(ctx, posix.dirname(target));
      copyEntry(ctx, srcHost, st, target);
    }
  }
}

export interface PlaceContext {
  destRoot: string;
  owner?: Owner;
  chmod?: ModeFn;
  preserveOwnership: boolean;
  /** Source "dev:ino" → the first copy (host path, inode), to recreate hardlinks. */
  hardlinks: Map<string, { real: string; ino: number }>;
}

function isDirectory(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Creates (or resolves) a directory inside the destination root; new ones get the step's owner. */
export function ensureDir(ctx: PlaceContext, inner: string): string {
  const o = ctx.owner ?? { uid: 0, gid: 0 };
  return mkdirAllInRoot(ctx.destRoot, inner, { uid: o.uid, gid: o.gid, mode: 0o755 });
}

/** Where to create one non-directory entry; `release` must be called when done with `path`. */
export interface Leaf {
  /** Path to create the entry at (through a held directory handle where the kernel allows). */
  path: string;
  /** The entry's plain host path, for records such as the hardlink map. */
  real: string;
  release(): void;
}

/**
 * Prepares `inner` for a new non-directory entry: opens its parent inside the root (RESOLVE_IN_ROOT
 * where available) and removes whatever non-directory is there. Create the entry with O_EXCL.
 */
export function prepareLeaf(ctx: PlaceContext, inner: string): Leaf {
  const norm = posix.normalize('/' + inner);
  const name = posix.basename(norm);
  if (name === '') throw new ObdkitError('ECOPY', 'cannot replace the root directory with a file', { file: norm });
  const parentInner = posix.dirname(norm);
  const handle = openDirInRoot(ctx.destRoot, parentInner);
  try {
    const parentReal = handle ? readlinkSync(handle.path()) : resolveInRoot(ctx.destRoot, parentInner);
    const path = handle ? handle.path(name) : join(parentReal, name);
    let st: Stats | undefined;
    try {
      st = lstatSync(path);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    if (st?.isDirectory()) {
      throw new ObdkitError('ECOPY', `cannot overwrite directory ${norm} with a non-directory`, { file: norm });
    }
    if (st !== undefined) unlinkSync(path);
    return { path, real: join(parentReal, name), release: () => handle?.close() };
  } catch (err) {
    handle?.close();
    throw err;
  }
}

/** Runs `fn` with a leaf prepared for `inner`, releasing it afterwards. */
export function withLeaf<T>(ctx: PlaceContext, inner: string, fn: (leaf: Leaf) => T): T {
  const leaf = prepareLeaf(ctx, inner);
  try {
    return fn(leaf);
  } finally {
    leaf.release();
  }
}

export interface DirMeta {
  owner: Owner;
  mode: number;
  xattrs: Map<string, Buffer>;
  atime: Date;
  mtime: Date;
}

/** Sets a directory's owner, mode, xattrs and times through an open handle (never via a swapped link). */
export function applyDirMeta(ctx: PlaceContext, inner: string, m: DirMeta): void {
  const h = openDirInRoot(ctx.destRoot, inner, { readable: true });
  if (h === null) {
    const host = resolveInRoot(ctx.destRoot, inner);
    lchownSync(host, m.owner.uid, m.owner.gid);
    chmodSync(host, m.mode);
    writeXattrs(host, m.xattrs);
    utimesSync(host, m.atime, m.mtime);
    return;
  }
  try {
    fchownSync(h.fd, m.owner.uid, m.owner.gid);
    fchmodSync(h.fd, m.mode);
    writeXattrsFd(h.fd, m.xattrs, inner);
    futimesSync(h.fd, m.atime, m.mtime);
  } finally {
    h.close();
  }
}

function modeFor(ctx: PlaceContext, st: Stats): number {
  const own = st.mode & 0o7777;
  return ctx.chmod ? ctx.chmod(own, st.isDirectory()) : own;
}

function ownerFor(ctx: PlaceContext, st: { uid: number; gid: number }): Owner {
  if (ctx.owner) return ctx.owner;
  return ctx.preserveOwnership ? { uid: st.uid, gid: st.gid } : { uid: 0, gid: 0 };
}

function copyTreeContents(ctx: PlaceContext, srcDir: string, destInner: string): void {
  for (const name of readdirSync(srcDir).sort()) {
    const src = join(srcDir, name);
    const st = lstatSync(src);
    copyEntry(ctx, src, st, posix.join(destInner, name));
  }
}

function copyEntry(ctx: PlaceContext, src: string, st: Stats, destInner: string): void {
  // Sockets cannot be copied meaningfully; Docker skips them too.
  if (st.isSocket()) return;
  const o = ownerFor(ctx, st);
  if (st.isDirectory()) {
    const host = resolveInRoot(ctx.destRoot, destInner);
    if (!isDirectory(host)) {
      // A file or a dangling link is replaced; an existing directory (or a link to one) is merged into.
      withLeaf(ctx, destInner, () => {});
    }
    ensureDir(ctx, destInner);
    copyTreeContents(ctx, src, destInner);
    applyDirMeta(ctx, destInner, { owner: o, mode: modeFor(ctx, st), xattrs: readXattrs(src), atime: st.atime, mtime: st.mtime });
    return;
  }
  withLeaf(ctx, destInner, (leaf) => {
    if (st.isFile() && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = ctx.hardlinks.get(key);
      if (first !== undefined) {
        linkSync(first.real, leaf.path);
        // The first copy's path is re-resolved by link(2); make sure it still named our file.
        if (lstatSync(leaf.path).ino !== first.ino) {
          unlinkSync(leaf.path);
          throw new ObdkitError('EPATHRACE', `hardlink target changed while copying ${destInner}`, { file: destInner });
        }
        return;
      }
    }
    if (st.isSymbolicLink()) {
      symlinkSync(readlinkSync(src), leaf.path);
      lchownSync(leaf.path, o.uid, o.gid);
      lutimesSync(leaf.path, st.atime, st.mtime);
      return;
    }
    if (st.isFile()) {
      copyRegularFile(src, leaf.path, o, modeFor(ctx, st), readXattrs(src), st.atime, st.mtime);
      if (st.nlink > 1) ctx.hardlinks.set(`${st.dev}:${st.ino}`, { real: leaf.real, ino: lstatSync(leaf.path).ino });
      return;
    }
    makeSpecial(leaf.path, st);
    lchownSync(leaf.path, o.uid, o.gid);
    chmodSync(leaf.path, modeFor(ctx, st));
    utimesSync(leaf.path, st.atime, st.mtime);
  });
}

const CHUNK = 1 << 20;

/** Streams one regular file into a new file, then sets owner, mode, xattrs and times in that order (chown clears capabilities). */
export function copyRegularFile(
  src: string,
  host: string,
  owner: Owner,
  mode: number,
  xattrs: Map<string, Buffer>,
  atime: Date,
  mtime: Date,
): void {
  const input = openSync(src, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const out = openSync(host, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      const buf = Buffer.allocUnsafe(CHUNK);
      for (;;) {
        const n = readSync(input, buf, 0, CHUNK, null);
        if (n === 0) break;
        let off = 0;
        while (off < n) off += writeSync(out, buf, off, n - off);
      }
      fchownSync(out, owner.uid, owner.gid);
      fchmodSync(out, mode);
      writeXattrsFd(out, xattrs, host);
      futimesSync(out, atime, mtime);
    } finally {
      closeSync(out);
    }
  } finally {
    closeSync(input);
  }
}

function makeSpecial(path: string, st: Stats): void {
  if (st.isFIFO()) {
    makeNode(path, 'fifo', 0o600);
  } else if (st.isCharacterDevice() || st.isBlockDevice()) {
    const { major, minor } = splitDev(st.rdev);
    makeNode(path, st.isCharacterDevice() ? 'char' : 'block', 0o600, major, minor);
  }
}
