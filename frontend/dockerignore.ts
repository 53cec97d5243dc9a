// `.dockerignore` files, read with Docker's rules: comments only at column 0, whitespace trimmed,
// patterns cleaned like paths, a leading `/` dropped, `!` re-includes. The frontend puts the patterns on
// the context source op; whoever walks the context matches them with src/util/path-patterns.ts.
import { cleanPath } from '../src/util/path-patterns.js';

export { cleanPath, PatternError, PatternMatcher } from '../src/util/path-patterns.js';

/** Parses `.dockerignore` text into the pattern list BuildKit sends as exclude patterns. */
export function parseDockerignore(text: string): string[] {
  const out: string[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (const line of lines) {
    if (line.startsWith('#')) continue;
    let pattern = line.trim();
    if (pattern === '') continue;
    const invert = pattern[0] === '!';
    if (invert) pattern = pattern.slice(1).trim();
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern[0] === '/') pattern = pattern.slice(1);
    }
    out.push(invert ? '!' + pattern : pattern);
  }
  return out;
}
