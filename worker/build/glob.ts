// Source patterns of COPY/ADD (`*`, `?`, `[...]`, `\` escapes; `*` never crosses `/`), expanded
// against a source root. A pattern without wildcards is returned as is, so a missing plain path is
// reported by the copy itself. Matches come back sorted, as absolute paths inside the root.
import { lstatSync, readdirSync } from 'node:fs';
import { join, posix } from 'node:path';

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
