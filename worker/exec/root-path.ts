// Path resolution scoped to a root directory, the equivalent of BuildKit's `fs.RootPath` and Go's
// securejoin: every component is looked at with lstat, symlinks are followed *as if* the root
// were `/`, and `..` never climbs above the root. Used by the RUN step (workdir, mount targets),
// by the user database reader (/etc/passwd may be a symlink) and by COPY/ADD (destination paths).
// The result is a host path that, at the time of resolution, contains no symlink component.
import { lchownSync, lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { join, posix } from 'node:path';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { openDirInRoot } from './dirfd.js';

/** Linux's own limit on symlinks followed during one lookup. */
const MAX_SYMLINKS = 40;

export interface ResolveOptions {
  /** Do not follow a symlink in the last component (lstat semantics). */
  noFollowFinal?: boolean;
}

/**
 * Resolves `unsafePath` (interpreted as absolute inside `root`) to a host path under `root`.
 * Components that do not exist are appended lexically, so the result can be used to create them.
 */
export function resolveInRoot(root: string, unsafePath: string, opts: ResolveOptions = {}): string {
  const rel = resolveRelative(root, unsafePath, opts);
  return rel === '' ? root : join(root, rel);
}

/** Like resolveInRoot, but returns the path inside the root ("" for the root itself, no leading slash). */
export function resolveRelative(root: string, unsafePath: string, opts: ResolveOptions = {}): string {
  // `pending` holds the components still to walk, first at the end (used as a stack).
  const pending = splitComponents(unsafePath).reverse();
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const comp = pending.pop()!;
    if (comp === '.' || comp === '') continue;
    if (comp === '..') {
      done.pop();
      continue;
    }
    const candidate = [...done, comp];
    const isFinal = pending.length === 0;
    let st;
    try {
      st = lstatSync(join(root, ...candidate));
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        // Missing: taken as is. Later components are still checked, since a `..` can bring the
        // walk back to existing (possibly symlinked) parts of the tree.
        done.push(comp);
        continue;
      }
      throw err;
    }
    if (!st.isSymbolicLink() || (isFinal && opts.noFollowFinal)) {
      done.push(comp);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new ObdkitError('ESYMLINKLOOP', `too many levels of symbolic links resolving ${unsafePath}`, {
        file: unsafePath,
      });
    }
    const target = readlinkSync(join(root, ...candidate));
    if (target.startsWith('/')) done.length = 0;
    pending.push(...splitComponents(target).reverse());
  }
  return done.join('/');
}

function splitComponents(p: string): string[] {
  return posix.normalize('/' + p).split('/').filter((c) => c !== '');
}

export interface MkdirInRootOptions {
  mode?: number;
  uid?: number;
  gid?: number;
}

/**
 * Creates `unsafePath` and its missing parents inside `root`, resolving each existing component
 * within the root. Created directories get the given owner; existing ones are left alone.
 * Returns the resolved host path.
 */
export function mkdirAllInRoot(root: string, unsafePath: string, opts: MkdirInRootOptions = {}): string {
  const rel = resolveRelative(root, unsafePath);
  let cur = root;
  let inner = '';
  for (const comp of rel.split('/').filter((c) => c !== '')) {
    const parentInner = inner === '' ? '/' : inner;
    cur = join(cur, comp);
    inner = `${inner}/${comp}`;
    let st;
    try {
      st = lstatSync(cur);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    if (st === undefined) {
      makeDir(root, parentInner, comp, cur, opts);
      continue;
    }
    if (st.isSymbolicLink()) {
      // Appeared after resolution: someone is racing us; refuse rather than follow.
      throw new ObdkitError('EPATHRACE', `path component became a symlink while creating ${unsafePath}`, {
        file: cur,
      });
    }
    if (!st.isDirectory()) {
      throw new ObdkitError('ENOTDIR', `cannot create directory ${unsafePath}: a component is not a directory`, {
        file: cur,
      });
    }
  }
  return cur;
}

/**
 * mkdir of one component. Through a RESOLVE_IN_ROOT handle on the parent where the kernel has
 * openat2, so a parent swapped for a symlink since resolution cannot move the new directory out.
 */
function makeDir(root: string, parentInner: string, name: string, fallback: string, opts: MkdirInRootOptions): void {
  const parent = openDirInRoot(root, parentInner);
  const target = parent ? parent.path(name) : fallback;
  try {
    mkdirSync(target, { mode: opts.mode ?? 0o755 });
    if (opts.uid !== undefined || opts.gid !== undefined) lchownSync(target, opts.uid ?? 0, opts.gid ?? 0);
  } finally {
    parent?.close();
  }
}

/** True if `inner` (a path inside the container, already normalised) lies at or below `prefix`. */
export function isUnder(inner: string, prefix: string): boolean {
  const a = posix.normalize('/' + inner);
  const b = posix.normalize('/' + prefix);
  return a === b || a.startsWith(b.endsWith('/') ? b : b + '/');
}
