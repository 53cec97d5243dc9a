// COPY (and the local-file half of ADD) into a rootfs directory with Docker's semantics: a source
// directory contributes its contents, several sources need a directory destination, modes, mtimes,
// symlinks, hardlinks and xattrs are kept, `--chown`/`--chmod` override owner and mode.
//
// Safety: source paths are resolved inside the source root (a symlink pointing out of the build
// context lands on a missing path inside it, never on a host file); inside copied trees symlinks
// are copied as links, never followed. Destination paths are resolved inside the destination root,
// and every file is created with O_EXCL|O_NOFOLLOW, so nothing is written outside it.
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
  chownSync,
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
import { execFileSync } from 'node:child_process';
import { join, posix } from 'node:path';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { mkdirAllInRoot, resolveInRoot } from './root-path.js';
import { resolveChown } from './user-db.js';
import { readXattrs, writeXattrs } from './xattr.js';
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
  /** Source "dev:ino" → host path of the first copy, to recreate hardlinks. */
  hardlinks: Map<string, string>;
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

/**
 * Prepares `inner` for a new non-directory entry: resolves its parent inside the root and removes
 * whatever non-directory is there. Returns the host path to create with O_EXCL.
 */
export function prepareLeaf(ctx: PlaceContext, inner: string): string {
  const norm = posix.normalize('/' + inner);
  const parent = resolveInRoot(ctx.destRoot, posix.dirname(norm));
  const host = join(parent, posix.basename(norm));
  let st: Stats | undefined;
  try {
    st = lstatSync(host);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (st?.isDirectory()) {
    throw new ObdkitError('ECOPY', `cannot overwrite directory ${norm} with a non-directory`, { file: norm });
  }
  if (st !== undefined) unlinkSync(host);
  return host;
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
  if (st.isDirectory()) {
    const host = resolveInRoot(ctx.destRoot, destInner);
    if (!isDirectory(host)) {
      // A file or a dangling link is replaced; an existing directory (or a link to one) is merged into.
      prepareLeaf(ctx, destInner);
    }
    const dirHost = ensureDir(ctx, destInner);
    copyTreeContents(ctx, src, destInner);
    const o = ownerFor(ctx, st);
    chownSync(dirHost, o.uid, o.gid);
    chmodSync(dirHost, modeFor(ctx, st));
    writeXattrs(dirHost, readXattrs(src));
    utimesSync(dirHost, st.atime, st.mtime);
    return;
  }
  const host = prepareLeaf(ctx, destInner);
  const o = ownerFor(ctx, st);
  if (st.isFile() && st.nlink > 1) {
    const key = `${st.dev}:${st.ino}`;
    const first = ctx.hardlinks.get(key);
    if (first !== undefined) {
      linkSync(first, host);
      return;
    }
    ctx.hardlinks.set(key, host);
  }
  if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(src), host);
    lchownSync(host, o.uid, o.gid);
    lutimesSync(host, st.atime, st.mtime);
    return;
  }
  if (st.isFile()) {
    copyRegularFile(src, host, o, modeFor(ctx, st), readXattrs(src), st.atime, st.mtime);
    return;
  }
  makeSpecial(host, st);
  chownSync(host, o.uid, o.gid);
  chmodSync(host, modeFor(ctx, st));
  utimesSync(host, st.atime, st.mtime);
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
      writeXattrs(host, xattrs);
      futimesSync(out, atime, mtime);
    } finally {
      closeSync(out);
    }
  } finally {
    closeSync(input);
  }
}

function makeSpecial(host: string, st: Stats): void {
  // Node has no mknod; these are rare in builds (a stage's /dev), so the coreutils tools do it.
  if (st.isFIFO()) {
    execFileSync('mkfifo', [host]);
  } else if (st.isCharacterDevice() || st.isBlockDevice()) {
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    execFileSync('mknod', [host, st.isCharacterDevice() ? 'c' : 'b', String(major), String(minor)]);
  }
}
