// The small file actions of a FileOp besides COPY: make a directory (WORKDIR, COPY --parents
// targets) and write a file with given content (inline here-doc files), both placed inside a
// rootfs through root-path.ts and created without following a symlink in the last component.
import { closeSync, constants, fchmodSync, fchownSync, lstatSync, openSync, writeSync } from 'node:fs';
import { posix } from 'node:path';
import { ObdkitError } from '../../src/util/errors.js';
import { mkdirAllInRoot, resolveInRoot } from './root-path.js';
import { applyDirMeta, withLeaf, type PlaceContext } from './copy-files.js';
import { resolveChown } from './user-db.js';

export interface MkdirActionOptions {
  root: string;
  path: string;
  mode: number;
  /** Create missing parents (`mkdir -p`); otherwise the parent must exist. */
  parents: boolean;
  /** `user[:group]` resolved in the rootfs; default root. */
  chown?: string;
}

export function mkdirInRoot(o: MkdirActionOptions): string {
  const owner = o.chown !== undefined ? resolveChown(o.root, o.chown) : { uid: 0, gid: 0 };
  const inner = posix.normalize('/' + o.path);
  if (!o.parents) {
    if (!isDirectory(resolveInRoot(o.root, posix.dirname(inner)))) {
      throw new ObdkitError('ENOENT', `parent of ${inner} does not exist`, { file: inner });
    }
  }
  const host = mkdirAllInRoot(o.root, inner, { uid: owner.uid, gid: owner.gid, mode: o.mode });
  const now = new Date();
  applyDirMeta({ destRoot: o.root, hardlinks: new Map(), preserveOwnership: false }, inner, {
    owner,
    mode: o.mode,
    xattrs: new Map(),
    atime: now,
    mtime: now,
  });
  return host;
}

function isDirectory(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

export interface MkfileActionOptions {
  root: string;
  path: string;
  mode: number;
  data: Buffer | string;
  chown?: string;
}

export function mkfileInRoot(o: MkfileActionOptions): string {
  const owner = o.chown !== undefined ? resolveChown(o.root, o.chown) : { uid: 0, gid: 0 };
  const ctx: PlaceContext = { destRoot: o.root, hardlinks: new Map(), preserveOwnership: false, owner };
  const inner = posix.normalize('/' + o.path);
  return withLeaf(ctx, inner, (leaf) => {
    const fd = openSync(leaf.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      const data = typeof o.data === 'string' ? Buffer.from(o.data) : o.data;
      let off = 0;
      while (off < data.length) off += writeSync(fd, data, off, data.length - off);
      fchownSync(fd, owner.uid, owner.gid);
      fchmodSync(fd, o.mode);
    } finally {
      closeSync(fd);
    }
    return leaf.real;
  });
}
