// Dockerfile variable expansion and word splitting, with the rules of BuildKit's shell lexer: `$VAR`,
// `${VAR}`, `${VAR:-x}`, `${VAR-x}`, `${VAR:+x}`, `${VAR+x}`, `${VAR:?msg}`, `${VAR#pat}`, `${VAR%pat}`
// (and the greedy `##`/`%%`), `${VAR/pat/repl}` and `${VAR//pat/repl}`; single quotes are literal, double
// quotes expand, the escape character (`\` or the `# escape=` directive's) protects the next character.
// The instruction parser (`instructions.ts`) decides which words go through here and which do not.

export interface LexOptions {
  /** Keep quote characters in the output (used for display names and heredoc detection). */
  rawQuotes?: boolean;
  /** Keep escape characters in the output. */
  rawEscapes?: boolean;
  /** Leave unset variables as written (`$X` stays `$X`). */
  skipUnsetEnv?: boolean;
  /** Treat quotes as ordinary characters (heredoc bodies). */
  skipProcessQuotes?: boolean;
}

export interface LexResult {
  /** The expanded word, spaces kept. */
  result: string;
  /** The expanded text split into words after expansion (quoted spaces do not split). */
  words: string[];
  matched: Set<string>;
  unmatched: Set<string>;
}

export type EnvLookup = ReadonlyMap<string, string>;

export class LexError extends Error {}

const EOF = '';

class Scanner {
  private readonly chars: string[];
  private pos = 0;
  constructor(s: string) {
    this.chars = Array.from(s);
  }
  peek(): string {
    return this.pos < this.chars.length ? this.chars[this.pos]! : EOF;
  }
  next(): string {
    return this.pos < this.chars.length ? this.chars[this.pos++]! : EOF;
  }
}

const isSpace = (ch: string): boolean => ch !== EOF && /^\s$/u.test(ch);
const isDigit = (ch: string): boolean => ch !== EOF && /^\p{Nd}$/u.test(ch);
const isLetter = (ch: string): boolean => ch !== EOF && /^\p{L}$/u.test(ch);
const SPECIAL_PARAMS = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);

/** Accumulates words: expanded text splits on whitespace, quoted or escaped text does not. */
class Words {
  word = '';
  words: string[] = [];
  inWord = false;
  addChar(ch: string): void {
    if (isSpace(ch) && this.inWord) {
      if (this.word.length !== 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else if (!isSpace(ch)) {
      this.addRawChar(ch);
    }
  }
  addRawChar(ch: string): void {
    this.word += ch;
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  get(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

export class ShellLex {
  constructor(readonly escapeToken: string = '\\') {}

  process(word: string, env: EnvLookup, opts: LexOptions = {}): LexResult {
    const run = new LexRun(this.escapeToken, env, opts, word);
    const { result, words } = run.processStopOn(EOF, opts.rawEscapes ?? false);
    return { result, words, matched: run.matched, unmatched: run.unmatched };
  }

  /** One word in, one word out (ENV, LABEL, WORKDIR, COPY sources, ...). */
  processWord(word: string, env: EnvLookup, opts: LexOptions = {}): string {
    return this.process(word, env, opts).result;
  }

  /** Expands, then splits into words (EXPOSE, heredoc detection). */
  processWords(word: string, env: EnvLookup, opts: LexOptions = {}): string[] {
    return this.process(word, env, opts).words;
  }
}

class LexRun {
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly sc: Scanner;
  private rawEscapes: boolean;

  constructor(
    private readonly escapeToken: string,
    private readonly env: EnvLookup,
    private readonly opts: LexOptions,
    word: string,
  ) {
    this.sc = new Scanner(word);
    this.rawEscapes = opts.rawEscapes ?? false;
  }

  processStopOn(stopChar: string, rawEscapes: boolean): { result: string; words: string[] } {
    let result = '';
    const words = new Words();
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      while (this.sc.peek() !== EOF) {
        const ch = this.sc.peek();
        if (stopChar !== EOF && ch === stopChar) {
          this.sc.next();
          return { result, words: words.get() };
        }
        if (ch === '$') {
          const tmp = this.processDollar();
          result += tmp;
          words.addString(tmp);
        } else if (this.opts.skipProcessQuotes) {
          const c = this.sc.next();
          if (c === this.escapeToken) {
            if (this.rawEscapes) {
              words.addRawChar(c);
              result += c;
            }
            const n = this.sc.next();
            if (n === EOF) break;
            words.addRawChar(n);
            result += n;
          } else {
            words.addChar(c);
            result += c;
          }
        } else if (ch === "'") {
          const tmp = this.processSingleQuote();
          result += tmp;
          words.addRawString(tmp);
        } else if (ch === '"') {
          const tmp = this.processDoubleQuote();
          result += tmp;
          words.addRawString(tmp);
        } else {
          let c = this.sc.next();
          if (c === this.escapeToken) {
            if (this.rawEscapes) {
              words.addRawChar(c);
              result += c;
            }
            c = this.sc.next();
            if (c === EOF) break;
            words.addRawChar(c);
          } else {
            words.addChar(c);
          }
          result += c;
        }
      }
      if (stopChar !== EOF) throw new LexError(`unexpected end of statement while looking for matching ${stopChar}`);
      return { result, words: words.get() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private processSingleQuote(): string {
    let result = '';
    const open = this.sc.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const ch = this.sc.next();
      if (ch === EOF) throw new LexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") {
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    let result = '';
    const open = this.sc.next();
    if (this.opts.rawQuotes) result += open;
    for (;;) {
      const p = this.sc.peek();
      if (p === EOF) throw new LexError('unexpected end of statement while looking for matching double-quote');
      if (p === '"') {
        const ch = this.sc.next();
        if (this.opts.rawQuotes) result += ch;
        return result;
      }
      if (p === '$') {
        result += this.processDollar();
        continue;
      }
      let ch = this.sc.next();
      if (ch === this.escapeToken) {
        if (this.rawEscapes) result += ch;
        const n = this.sc.peek();
        if (n === EOF) continue; // a trailing escape is dropped
        // Inside double quotes only `"`, `$` and the escape itself can be escaped; others stay literal.
        if (n === '"' || n === '$' || n === this.escapeToken) ch = this.sc.next();
      }
      result += ch;
    }
  }

  private processDollar(): string {
    this.sc.next();
    if (this.sc.peek() !== '{') {
      const name = this.processName();
      if (name === '') return '$';
      const v = this.getEnv(name);
      if (v === undefined && this.opts.skipUnsetEnv) return '$' + name;
      return v ?? '';
    }
    this.sc.next();
    const first = this.sc.peek();
    if (first === EOF) throw new LexError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new LexError('syntax error: bad substitution');
    const name = this.processName();
    let ch = this.sc.next();
    let chs = ch;
    let nullIsUnset = false;
    switch (ch) {
      case '}': {
        const v = this.getEnv(name);
        if (v === undefined && this.opts.skipUnsetEnv) return '${' + name + '}';
        return v ?? '';
      }
      case ':':
      case '+':
      case '-':
      case '?':
      case '#':
      case '%': {
        if (ch === ':') {
          nullIsUnset = true;
          ch = this.sc.next();
          chs += ch;
        }
        const raw = ch === '#' || ch === '%';
        let word: string;
        try {
          word = this.processStopOn('}', raw).result;
        } catch (err) {
          if (this.sc.peek() === EOF) throw new LexError("syntax error: missing '}'");
          throw err;
        }
        const value = this.getEnv(name);
        const set = value !== undefined;
        if (this.opts.skipUnsetEnv && !set) return '${' + name + chs + word + '}';
        const v = value ?? '';
        switch (ch) {
          case '-':
            return !set || (nullIsUnset && v === '') ? word : v;
          case '+':
            return !set || (nullIsUnset && v === '') ? '' : word;
          case '?':
            if (!set) throw new LexError(`${name}: ${word !== '' ? word : 'is not allowed to be unset'}`);
            if (nullIsUnset && v === '') throw new LexError(`${name}: ${word !== '' ? word : 'is not allowed to be empty'}`);
            return v;
          case '%':
          case '#': {
            let pat = word;
            let greedy = false;
            if (pat.length > 0 && pat[0] === ch) {
              greedy = true;
              pat = pat.slice(1);
            }
            return ch === '%' ? trimSuffix(pat, v, greedy) : trimPrefix(pat, v, greedy);
          }
          default:
            throw new LexError(`unsupported modifier (${chs}) in substitution`);
        }
      }
      case '/': {
        const all = this.sc.peek() === '/';
        if (all) this.sc.next();
        let pattern: string;
        let replacement: string;
        try {
          pattern = this.processStopOn('/', true).result;
        } catch (err) {
          if (this.sc.peek() === EOF) throw new LexError("syntax error: missing '/' in ${}");
          throw err;
        }
        try {
          replacement = this.processStopOn('}', true).result;
        } catch (err) {
          if (this.sc.peek() === EOF) throw new LexError("syntax error: missing '}'");
          throw err;
        }
        const value = this.getEnv(name);
        if (this.opts.skipUnsetEnv && value === undefined) return '${' + name + '/' + pattern + '/' + replacement + '}';
        const re = shellPatternToRegex(pattern, true, false, all);
        return (value ?? '').replace(re, () => replacement);
      }
      default:
        throw new LexError(`unsupported modifier (${chs}) in substitution`);
    }
  }

  private processName(): string {
    let name = '';
    while (this.sc.peek() !== EOF) {
      const ch = this.sc.peek();
      if (name.length === 0 && isDigit(ch)) {
        while (this.sc.peek() !== EOF && isDigit(this.sc.peek())) name += this.sc.next();
        return name;
      }
      if (name.length === 0 && SPECIAL_PARAMS.has(ch)) return this.sc.next();
      if (!isLetter(ch) && !isDigit(ch) && ch !== '_') break;
      name += this.sc.next();
    }
    return name;
  }

  private getEnv(name: string): string | undefined {
    const v = this.env.get(name);
    if (v !== undefined) this.matched.add(name);
    else this.unmatched.add(name);
    return v;
  }
}

/** Shell wildcard (`*`, `?`, `\` escapes; no brackets) to a regular expression. */
function shellPatternToRegex(pattern: string, greedy: boolean, anchored: boolean, global = false): RegExp {
  const chars = Array.from(pattern);
  let out = anchored ? '^' : '';
  const star = greedy ? '[\\s\\S]*' : '[\\s\\S]*?';
  for (let i = 0; i < chars.length; i++) {
    const tok = chars[i]!;
    if (tok === '*') {
      out += star;
      continue;
    }
    if (tok === '?') {
      out += '[\\s\\S]';
      continue;
    }
    if (tok === '\\') {
      const n = chars[i + 1];
      // `}` and `/` are escaped only to survive the ${} syntax; the escape is not part of the pattern.
      if (n === '}' || n === '/') continue;
      if (n !== '*' && n !== '?' && n !== '\\') throw new LexError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${n ?? ''}'`);
      out += '\\' + n;
      i++;
      continue;
    }
    out += /[[\]{}.+()|^$]/.test(tok) ? '\\' + tok : tok;
  }
  return new RegExp(out, global ? 'gu' : 'u');
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const m = shellPatternToRegex(pattern, greedy, true).exec(value);
  return m ? value.slice(m[0].length) : value;
}

/** Reverses a pattern but keeps each escape in front of the character it escapes. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const out: string[] = new Array(chars.length);
  const last = chars.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = chars[i]!;
    const o = last - i;
    if (tok === '\\' && i !== last) {
      out[o - 1] = tok;
      out[o] = chars[i + 1]!;
      i += 2;
    } else {
      out[o] = tok;
      i++;
    }
  }
  return out.join('');
}

function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  // The shortest/longest match at the end is the shortest/longest match at the start of the reversed string.
  const rev = (s: string): string => Array.from(s).reverse().join('');
  return rev(trimPrefix(reversePattern(pattern), rev(value), greedy));
}

/** Env list (`K=V`) to a lookup map; later entries win. */
export function envMap(list: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of list) {
    const i = e.indexOf('=');
    if (i < 0) m.set(e, '');
    else m.set(e.slice(0, i), e.slice(i + 1));
  }
  return m;
}
