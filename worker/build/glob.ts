// Source patterns of COPY/ADD (`*`, `?`, `[...]`, `\` escapes; `*` never crosses `/`), expanded
// against a source root. A pattern without wildcards is returned as is, so a missing plain path is
// reported by the copy itself. Matches come back sorted, as absolute paths inside the root.
// Also the plan that turns `COPY --parents` / `--exclude` into plain copies for copy-files.ts.
import { lstatSync, readdirSync, statSync, type Stats } from 'node:fs';
import { join, posix } from 'node:path';
import { resolveInRoot } from '../exec/root-path.js';

export function hasWildcard(p: string): boolean {
  return /[*?[\\]/.test(p);
}

function componentRegExp(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\' && i + 1 < pattern.length) re += escape(pattern[++i]!);
    else if (c === '[') {
      const close = pattern.indexOf(']', i + 2);
      if (close < 0) {
        re += '\\[';
        continue;
      }
      let cls = pattern.slice(i + 1, close);
      if (cls.startsWith('^') || cls.startsWith('!')) cls = '^' + cls.slice(1);
      re += '[' + cls.replace(/\\/g, '\\\\') + ']';
      i = close;
    } else re += escape(c);
  }
  return new RegExp(re + '$');
}

function escape(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** Paths under `root` matching `pattern` (relative or absolute inside the root). */
export function expandSource(root: string, pattern: string): string[] {
  const clean = posix.normalize('/' + pattern);
  if (!hasWildcard(clean)) return [clean];
  let found = ['/'];
  for (const part of clean.split('/').filter((x) => x !== '')) {
    const next: string[] = [];
    if (!hasWildcard(part)) {
      for (const f of found) next.push(posix.join(f, part));
    } else {
      const re = componentRegExp(part);
      for (const f of found) {
        let names: string[];
        try {
          if (!lstatSync(join(root, f)).isDirectory()) continue;
          names = readdirSync(join(root, f));
        } catch {
          continue;
        }
        for (const n of names.sort()) if (re.test(n)) next.push(posix.join(f, n));
      }
    }
    found = next;
  }
  return found.filter((f) => {
    try {
      lstatSync(join(root, f));
      return true;
    } catch {
      return false;
    }
  });
}

/** The directory a wildcard pattern starts from (its components before the first wildcard); undefined without one. */
export function wildcardBase(pattern: string): string | undefined {
  const parts = posix.normalize('/' + pattern).split('/').filter((x) => x !== '');
  const i = parts.findIndex(hasWildcard);
  return i < 0 ? undefined : '/' + parts.slice(0, i).join('/');
}

/** The part of a COPY source that `--parents` keeps: below the `/./` pivot if there is one, else below the root. */
export function parentsPivot(pattern: string): string {
  // A leading `./` only says "relative"; it is not a pivot.
  let p = pattern;
  while (p.startsWith('./')) p = p.slice(2);
  const i = ('/' + p).indexOf('/./');
  return i < 0 ? '/' : posix.normalize('/' + ('/' + p).slice(0, i));
}

/** One piece of a planned COPY: make a directory like a source one, or copy sources to a destination. */
export type CopyStep =
  | { kind: 'mkdir'; path: string; like: Stats }
  | { kind: 'copy'; sources: string[]; dest: string; dirContents: boolean };

export interface CopyPlanOptions {
  srcRoot: string;
  /**
   * Matched sources, absolute inside srcRoot, each with the pivot `--parents` keeps its path below and,
   * for a wildcard match, the fixed directory its pattern starts from (excludes match below it too).
   */
  sources: { path: string; pivot: string; base?: string }[];
  dest: string;
  dirContents: boolean;
  parents: boolean;
  /** Follow a symlink named as a source itself (as the copy does). */
  followSymlinks: boolean;
  /** True for a path (relative to srcRoot, or to the directory source it lies in) that must not be copied. */
  excluded?: (rel: string, relToSource: string | undefined) => boolean;
}

/**
 * Splits a COPY with `--parents` and/or `--exclude` into plain copies. A directory holding excluded
 * entries is recreated (like its source) and its remaining entries copied one level down; a directory
 * with nothing excluded is still copied whole.
 */
export function planCopy(o: CopyPlanOptions): CopyStep[] {
  const steps: CopyStep[] = [];
  const push = (source: string, dest: string, dirContents: boolean): void => {
    const last = steps[steps.length - 1];
    if (last?.kind === 'copy' && last.dest === dest && last.dirContents === dirContents) last.sources.push(source);
    else steps.push({ kind: 'copy', sources: [source], dest, dirContents });
  };
  // Paths are looked up inside the source root, symlinks and all, as the copy itself will.
  const host = (inner: string, follow = false): string => resolveInRoot(o.srcRoot, inner, { noFollowFinal: !follow });
  const stat = (inner: string, follow = false): Stats | undefined => {
    try {
      return (follow ? statSync : lstatSync)(host(inner, follow));
    } catch {
      return undefined;
    }
  };
  const isDir = (inner: string, follow = false): boolean => stat(inner, follow)?.isDirectory() ?? false;
  // Returns false when something below `dir` is excluded (so it cannot be copied whole).
  const clean = (dir: string, top: string): boolean => {
    for (const n of readdirSync(host(dir, true))) {
      const p = posix.join(dir, n);
      if (isExcluded(p, top)) return false;
      if (isDir(p) && !clean(p, top)) return false;
    }
    return true;
  };
  const isExcluded = (inner: string, top: string | undefined): boolean =>
    o.excluded !== undefined && o.excluded(inner.slice(1), top === undefined || top === inner ? undefined : posix.relative(top, inner));
  // Copies the entries of `dir` into the directory `destDir`, leaving out the excluded ones.
  const contents = (dir: string, destDir: string, top: string): void => {
    for (const n of readdirSync(host(dir, true)).sort()) {
      const p = posix.join(dir, n);
      if (isExcluded(p, top)) continue;
      if (isDir(p) && !clean(p, top)) {
        const d = posix.join(destDir, n);
        steps.push({ kind: 'mkdir', path: d, like: stat(p)! });
        contents(p, d, top);
      } else push(p, destDir.endsWith('/') ? destDir : destDir + '/', false);
    }
  };
  for (const { path: s, pivot, base } of o.sources) {
    if (isExcluded(s, base)) continue;
    const dir = isDir(s, o.followSymlinks);
    let dest = o.dest;
    if (o.parents) {
      const rel = posix.relative(pivot, s);
      // A directory lands at its own kept path; a file goes into the directory its path names.
      dest = dir ? posix.join(o.dest, rel) + '/' : posix.join(o.dest, posix.dirname(rel)) + '/';
    }
    if (!dir || o.excluded === undefined || clean(s, s)) {
      push(s, dest, o.dirContents);
      continue;
    }
    if (o.dirContents) {
      contents(s, dest, s);
    } else {
      const d = posix.join(dest, posix.basename(s));
      steps.push({ kind: 'mkdir', path: d, like: stat(s, o.followSymlinks)! });
      contents(s, d, s);
    }
  }
  return steps;
}
