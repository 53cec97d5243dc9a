// OCI whiteouts applied as real deletions. A whiteout only hides what the *lower* layers hold:
// anything this same layer wrote (before or after the marker) survives. So the applier records
// every path it writes (symlink-free, relative to the root) and, for each ancestor directory,
// that something below it was written. `.wh.<name>` prunes `<name>`; `.wh..wh..opq` prunes every
// child of its directory. Pruning removes a lower subtree whole, but descends into directories
// that hold this layer's own entries and removes only the lower parts beside them.
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '../../src/util/errors.js';
import { joinRel } from './root-walk.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

export class WrittenPaths {
  private readonly written = new Set<string>();
  private readonly ancestors = new Set<string>();

  add(rel: string): void {
    this.written.add(rel);
    let i = rel.lastIndexOf('/');
    while (i > 0) {
      const a = rel.slice(0, i);
      if (this.ancestors.has(a)) break;
      this.ancestors.add(a);
      i = a.lastIndexOf('/');
    }
  }

  /** True if this layer wrote `rel` itself or anything below it. */
  touches(rel: string): boolean {
    return this.written.has(rel) || this.ancestors.has(rel);
  }
}

export interface PruneHooks {
  /** Called before a directory's entries are removed (to remember its times). */
  beforeChange(dirRel: string): Promise<void>;
}

/**
 * Removes the lower-layer content at `rel` (see the file comment). Returns how many top-level
 * removals were made.
 */
export async function prune(root: string, rel: string, written: WrittenPaths, hooks: PruneHooks): Promise<number> {
  const abs = join(root, rel);
  let st;
  try {
    st = await lstat(abs);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
  if (!written.touches(rel)) {
    const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    await hooks.beforeChange(parent);
    // rm never follows symlinks inside the tree it removes.
    await rm(abs, { recursive: true, force: true });
    return 1;
  }
  if (!st.isDirectory()) return 0;
  return pruneChildren(root, rel, written, hooks);
}

/** Prunes every child of directory `rel` (the opaque-directory case). */
export async function pruneChildren(root: string, rel: string, written: WrittenPaths, hooks: PruneHooks): Promise<number> {
  let names: string[];
  try {
    names = await readdir(join(root, rel));
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return 0;
    throw err;
  }
  let n = 0;
  for (const name of names.sort()) n += await prune(root, joinRel(rel, name), written, hooks);
  return n;
}
