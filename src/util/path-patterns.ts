// Path patterns with Docker's `.dockerignore` semantics, for anything that filters a tree of relative
// paths (build-context transfer, COPY --exclude): `*` and `?` stop at `/`, `**` spans directories,
// `[...]` classes, `\` escapes; the last matching pattern decides, `!` re-includes, and a pattern that
// matches a parent directory matches everything below it. Reading `.dockerignore` files is the
// frontend's job (frontend/dockerignore.ts); matching lives here, below both frontend and worker.

/** POSIX path cleaning with Go's `path.Clean` results (`a//b/../c/` -> `a/c`, `` -> `.`). */
export function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const s = out.join('/');
  if (rooted) return '/' + s;
  return s === '' ? '.' : s;
}

type MatchKind = 'exact' | 'prefix' | 'suffix' | 'regexp';

interface Pattern {
  text: string;
  exclusion: boolean;
  kind: MatchKind;
  re?: RegExp;
}

export class PatternError extends Error {}

const REGEX_SPECIAL = new Set(['.', '+', '(', ')', '|', '{', '}', '$']);

function compile(text: string, exclusion: boolean): Pattern {
  let reStr = '^';
  let kind: MatchKind = 'exact';
  const chars = Array.from(text);
  for (let i = 0, idx = 0; i < chars.length; i++, idx++) {
    const ch = chars[i]!;
    if (ch === '*') {
      if (chars[i + 1] === '*') {
        i++;
        if (chars[i + 1] === '/') i++; // `**/` behaves as `**`
        if (i + 1 >= chars.length) {
          // Trailing `**` accepts everything below, as .gitignore does.
          if (kind === 'exact') kind = 'prefix';
          else {
            reStr += '.*';
            kind = 'regexp';
          }
        } else {
          reStr += '(.*/)?';
          kind = 'regexp';
        }
        if (idx === 0) kind = 'suffix';
      } else {
        reStr += '[^/]*';
        kind = 'regexp';
      }
    } else if (ch === '?') {
      reStr += '[^/]';
      kind = 'regexp';
    } else if (REGEX_SPECIAL.has(ch)) {
      reStr += '\\' + ch;
    } else if (ch === '\\') {
      if (i + 1 < chars.length) {
        reStr += '\\' + chars[++i]!;
        kind = 'regexp';
      } else {
        reStr += '\\\\';
      }
    } else if (ch === '[' || ch === ']') {
      reStr += ch;
      kind = 'regexp';
    } else {
      reStr += ch;
    }
  }
  const p: Pattern = { text, exclusion, kind };
  if (kind === 'regexp') {
    try {
      p.re = new RegExp(reStr + '$');
    } catch {
      throw new PatternError(`syntax error in pattern ${JSON.stringify(text)}`);
    }
  }
  return p;
}

function matchOne(p: Pattern, path: string): boolean {
  switch (p.kind) {
    case 'exact':
      return path === p.text;
    case 'prefix':
      return path.startsWith(p.text.slice(0, -2));
    case 'suffix': {
      const suffix = p.text.slice(2);
      if (path.endsWith(suffix)) return true;
      // `**/foo` also matches `foo` itself.
      return suffix[0] === '/' && path === suffix.slice(1);
    }
    case 'regexp':
      return p.re!.test(path);
  }
}

export class PatternMatcher {
  private readonly patterns: Pattern[] = [];
  readonly hasExclusions: boolean;

  constructor(patterns: readonly string[]) {
    let excl = false;
    for (let raw of patterns) {
      raw = raw.trim();
      if (raw === '') continue;
      raw = cleanPath(raw);
      let exclusion = false;
      if (raw[0] === '!') {
        if (raw.length === 1) throw new PatternError('illegal exclusion pattern: "!"');
        exclusion = true;
        excl = true;
        raw = raw.slice(1);
      }
      this.patterns.push(compile(raw, exclusion));
    }
    this.hasExclusions = excl;
  }

  /**
   * True when `file` (slash-separated, relative to the context root) is excluded: some pattern matches it
   * or one of its parent directories, and no later `!` pattern re-includes it.
   */
  matches(file: string): boolean {
    file = cleanPath(file);
    if (file === '.') return false; // the context root itself is never excluded
    const slash = file.lastIndexOf('/');
    const parentDirs = slash < 0 ? [] : file.slice(0, slash).split('/');
    let matched = false;
    for (const p of this.patterns) {
      // An inclusion cannot change an already-matched path, nor an exclusion an unmatched one.
      if (p.exclusion !== matched) continue;
      let m = matchOne(p, file);
      for (let i = 0; !m && i < parentDirs.length; i++) {
        m = matchOne(p, parentDirs.slice(0, i + 1).join('/'));
      }
      if (m) matched = !p.exclusion;
    }
    return matched;
  }
}
