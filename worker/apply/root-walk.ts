// Confinement of tar entry paths to the root being written. Entry names are cleaned lexically first
// (a `..` that would climb above the root rejects the layer). Parent directories are then walked
// component by component with lstat; a symlink met on the way is followed *as if the root were /*
// (absolute targets restart at the root, `..` stops at the root), like securejoin. The final
// component is never followed: entries replace what is there. The result is a path relative to
// the root that contains no symlink, so every later operation on it stays inside the root.
import { chmodSync, lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';

/** Linux's own limit on symlinks followed in one lookup. */
const MAX_SYMLINKS = 40;

/**
 * Splits an entry name into components. A leading `/` or `./` is taken as the root; `.` is dropped;
 * `..` removes the previous component and must never climb above the root.
 */
export function cleanEntryPath(name: string, ctx: { file: string; offset: number }): string[] {
  if (name.includes('\0')) throw new ObdkitError('EAPPLY_UNSAFE_PATH', `entry name contains NUL: ${JSON.stringify(name)}`, ctx);
  const out: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) {
        throw new ObdkitError('EAPPLY_UNSAFE_PATH', `entry ${JSON.stringify(name)} climbs out of the root`, ctx);
      }
      out.pop();
      continue;
    }
    out.push(c);
  }
  return out;
}

export function joinRel(parent: string, base: string): string {
  return parent === '' ? base : `${parent}/${base}`;
}

function lstatOrNull(p: string): import('node:fs').Stats | null {
  try {
    return lstatSync(p);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  }
}

export interface ResolveDirOptions {
  /** Create missing directories (mode 0755, root-owned); otherwise a missing one yields null. */
  create: boolean;
  /** Awaited before a missing directory is created, with the relative path of its parent. */
  beforeCreate?: (parentRel: string) => Promise<void>;
  /** For error messages. */
  entry: string;
}

/**
 * Resolves directory components inside `root`, following symlinks within the root. Returns the
 * symlink-free relative path ('' for the root), or null when a component is missing and
 * `create` is false. A component that exists but is not a directory is an error.
 */
export async function resolveDir(root: string, comps: readonly string[], opts: ResolveDirOptions): Promise<string | null> {
  const pending = [...comps].reverse();
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const comp = pending.pop()!;
    if (comp === '' || comp === '.') continue;
    if (comp === '..') {
      done.pop();
      continue;
    }
    const rel = [...done, comp].join('/');
    const abs = join(root, rel);
    const st = lstatOrNull(abs);
    if (st === null) {
      if (!opts.create) return null;
      await opts.beforeCreate?.(done.join('/'));
      mkdirSync(abs, { mode: 0o755 });
      // mkdir's mode is filtered by the umask; implicit parents are always 0755, as in the runtime.
      chmodSync(abs, 0o755);
      done.push(comp);
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) {
        throw new ObdkitError('EAPPLY_SYMLINK_LOOP', `too many levels of symbolic links under ${JSON.stringify(opts.entry)}`, { file: rel });
      }
      const target = readlinkSync(abs);
      if (target.startsWith('/')) done.length = 0;
      pending.push(...target.split('/').reverse());
      continue;
    }
    if (!st.isDirectory()) {
      if (!opts.create) return null;
      throw new ObdkitError('EAPPLY_NOT_DIR', `a parent of ${JSON.stringify(opts.entry)} is not a directory`, { file: rel });
    }
    done.push(comp);
  }
  return done.join('/');
}
