// Dockerfile text -> instructions, before any expansion. dockerfile-ast reads the parser directives
// (`# escape=`, `# syntax=`); this module then scans lines the way BuildKit's parser does (continuation
// lines joined, comment and blank lines inside dropped, leading whitespace of continuation lines kept),
// splits off `--flags`, and collects heredoc bodies. The argument forms
// (JSON arrays, `k=v` lists, whitespace lists) are parsed by the helpers at the bottom; `convert.ts` decides
// what each instruction means and which words are expanded.
import { DockerfileParser } from 'dockerfile-ast';
import { ObdkitError } from '../src/util/errors.js';
import { ShellLex, LexError } from './shell-lex.js';

export interface Flag {
  name: string;
  /** null for a bare `--link`. */
  value: string | null;
}

export interface Heredoc {
  name: string;
  content: string;
  /** `<<-`: leading tabs are stripped from the body. */
  chomp: boolean;
  /** False when the delimiter was quoted: the body is taken literally. */
  expand: boolean;
}

export interface Instruction {
  /** Upper-cased keyword; `rawKeyword` is as written (casing lint rules). */
  keyword: string;
  rawKeyword: string;
  /** 1-based first and last line, heredoc bodies included. */
  line: number;
  endLine: number;
  /** The logical line as written, keyword and flags included (what progress names show). */
  original: string;
  flags: Flag[];
  /** The arguments after the flags. */
  rest: string;
  heredocs: Heredoc[];
  /** Comment lines directly above (BuildKit's doc comments for stages and args). */
  comments: string[];
  /** Set when a blank line sat inside the continuation; the line where the logical line ended. */
  emptyContinuationLine?: number;
}

export interface ParsedDockerfile {
  file: string;
  escapeToken: string;
  syntax?: string;
  instructions: Instruction[];
  source: string;
}

export function dockerfileError(message: string, file: string, line: number, cause?: unknown): ObdkitError {
  return new ObdkitError('EDOCKERFILE', message, { file, line }, cause === undefined ? undefined : { cause });
}

const HEREDOC_KEYWORDS = new Set(['RUN', 'COPY', 'ADD']);
const KNOWN = new Set([
  'ADD', 'ARG', 'CMD', 'COPY', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'FROM', 'HEALTHCHECK', 'LABEL', 'MAINTAINER',
  'ONBUILD', 'RUN', 'SHELL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR',
]);

export function parseDockerfile(source: string, file = 'Dockerfile'): ParsedDockerfile {
  const text = source.replace(/^\uFEFF/, '');
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  // Parser directives can only sit in the leading comment block, so only that block is handed to
  // dockerfile-ast (parsing the whole file there would cost more than the translation itself).
  let head = 0;
  while (head < lines.length && (lines[head]!.trim() === '' || lines[head]!.trimStart().startsWith('#'))) head++;
  const df = DockerfileParser.parse(lines.slice(0, head).join('\n') + '\n');
  const escapeToken = df.getEscapeCharacter();
  if (escapeToken !== '\\' && escapeToken !== '`') {
    throw dockerfileError(`invalid escape token '${escapeToken}' does not match ` + '[\\\\`]', file, 1);
  }
  let syntax: string | undefined;
  for (const d of df.getDirectives()) {
    if (d.getName().toLowerCase() === 'syntax') syntax = d.getValue() ?? undefined;
  }
  const directiveLines = new Set(df.getDirectives().map((d) => d.getRange().start.line));
  const contRe = new RegExp('\\' + escapeToken + '[ \\t]*$');

  // Instruction boundaries follow BuildKit's line scanner (heredoc bodies included); dockerfile-ast's
  // editor-oriented instruction ranges differ in corner cases, so only its directives are used.
  const out: Instruction[] = [];
  const comments: string[] = [];
  let next = 0;
  while (next < lines.length) {
    const start = next;
    const t = lines[start]!.trimStart();
    if (t === '' || contRe.test(t) && t.replace(contRe, '').trim() === '') {
      next++;
      continue;
    }
    if (t.startsWith('#')) {
      if (!directiveLines.has(start)) {
        const c = t.slice(1).trim();
        if (c === '') comments.length = 0;
        else comments.push(c);
      }
      next++;
      continue;
    }
    // Rebuild the logical line.
    let i = start;
    let first = t;
    let logical: string;
    let cont = contRe.test(first);
    let emptyContinuation = false;
    logical = cont ? first.replace(contRe, '') : first;
    while (cont && i + 1 < lines.length) {
      i++;
      const raw = lines[i]!;
      if (raw.trimStart().startsWith('#')) continue;
      if (raw.trim() === '') {
        emptyContinuation = true;
        continue;
      }
      cont = contRe.test(raw);
      logical += cont ? raw.replace(contRe, '') : raw;
    }
    first = logical;
    const m = /^(\S+)\s*([\s\S]*)$/.exec(first);
    const keyword = (m?.[1] ?? '').toUpperCase();
    const afterKeyword = m?.[2] ?? '';
    const lineNo = start + 1;
    const logicalEnd = i + 1;
    if (!KNOWN.has(keyword)) {
      throw dockerfileError(`unknown instruction: ${m?.[1] ?? first}`, file, lineNo);
    }
    const { flags, rest } = extractFlags(afterKeyword, escapeToken, file, lineNo);

    const heredocs: Heredoc[] = [];
    if (HEREDOC_KEYWORDS.has(keyword) && logical.includes('<<')) {
      let specs: Omit<Heredoc, 'content'>[];
      try {
        specs = heredocsFromLine(rest);
      } catch (err) {
        throw dockerfileError((err as Error).message, file, lineNo, err);
      }
      for (const spec of specs) {
        let content = '';
        let terminated = false;
        while (i + 1 < lines.length) {
          i++;
          const raw = lines[i]!;
          const candidate = spec.chomp ? raw.replace(/^\t+/, '') : raw;
          if (candidate === spec.name) {
            terminated = true;
            break;
          }
          content += raw + '\n';
        }
        if (!terminated) throw dockerfileError('unterminated heredoc', file, lineNo);
        heredocs.push({ ...spec, content });
      }
    }
    next = i + 1;
    const ins: Instruction = {
      keyword,
      rawKeyword: m?.[1] ?? keyword,
      line: lineNo,
      endLine: i + 1,
      original: logical.trim(),
      flags,
      rest: rest.trim(),
      heredocs,
      comments: [...comments],
    };
    if (emptyContinuation) ins.emptyContinuationLine = logicalEnd;
    out.push(ins);
    comments.length = 0;
  }
  if (out.length === 0) throw dockerfileError('file with no instructions', file, lines.length);
  return { file, escapeToken, syntax, instructions: out, source: text };
}

/** Leading `--name[=value]` words; quotes inside a flag word are removed. `--` alone ends the flags. */
function extractFlags(s: string, escape: string, file: string, line: number): { flags: Flag[]; rest: string } {
  const flags: Flag[] = [];
  let pos = 0;
  for (;;) {
    while (pos < s.length && /\s/.test(s[pos]!)) pos++;
    if (!s.startsWith('--', pos)) break;
    let word = '';
    let quote = '';
    let j = pos;
    for (; j < s.length; j++) {
      const ch = s[j]!;
      if (quote) {
        if (ch === quote) quote = '';
        else if (ch === escape && quote === '"' && j + 1 < s.length) word += s[++j];
        else word += ch;
        continue;
      }
      if (/\s/.test(ch)) break;
      if (ch === '"' || ch === "'") quote = ch;
      else if (ch === escape && j + 1 < s.length) word += s[++j];
      else word += ch;
    }
    if (quote) throw dockerfileError(`unterminated quote in flag ${s.slice(pos, j)}`, file, line);
    pos = j;
    if (word === '--') break;
    const body = word.slice(2);
    const eq = body.indexOf('=');
    flags.push(eq < 0 ? { name: body, value: null } : { name: body.slice(0, eq), value: body.slice(eq + 1) });
  }
  return { flags, rest: s.slice(pos) };
}

const HEREDOC_RE = /^(\d*)<<(-?)\s*([^<]*)$/;

/** One word -> heredoc spec, or null when the word is not a heredoc marker. */
export function parseHeredocWord(word: string): Omit<Heredoc, 'content'> | null {
  const m = HEREDOC_RE.exec(word);
  if (!m || m[3]!.length === 0) return null;
  const lex = new ShellLex('\\');
  const env = new Map<string, string>();
  const words = lex.processWords(m[3]!, env, { skipUnsetEnv: true });
  if (words.length !== 1) return null;
  const raw = lex.processWords(m[3]!, env, { skipUnsetEnv: true, rawQuotes: true });
  const q = (s: string): number => (s.match(/['"]/g) ?? []).length;
  // A quoted delimiter (`<<'EOF'`, `<<"EOF"`) disables expansion of the body, as in sh.
  return { name: words[0]!, chomp: m[2] === '-', expand: q(words[0]!) === q(raw[0] ?? '') };
}

function heredocsFromLine(line: string): Omit<Heredoc, 'content'>[] {
  let words: string[];
  try {
    words = new ShellLex('\\').processWords(line, new Map(), { rawQuotes: true, rawEscapes: true, skipUnsetEnv: true });
  } catch (err) {
    if (err instanceof LexError) return [];
    throw err;
  }
  const out: Omit<Heredoc, 'content'>[] = [];
  for (const w of words) {
    const h = parseHeredocWord(w);
    if (h) out.push(h);
  }
  return out;
}

// ---- flags ----

/** Runs an expansion/parsing step, turning its failure into an error at the instruction's line. */
export function expand<T>(df: ParsedDockerfile, ins: Instruction, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw dockerfileError((err as Error).message, df.file, ins.line, err);
  }
}

export function allowFlags(df: ParsedDockerfile, ins: Instruction, allowed: string[]): void {
  for (const f of ins.flags) {
    if (!allowed.includes(f.name)) throw dockerfileError(`unknown flag: --${f.name}`, df.file, ins.line);
  }
}

/** The last value given for a flag (`''` for a bare `--flag`). */
export function flagValue(ins: Instruction, name: string): string | undefined {
  const fl = ins.flags.filter((f) => f.name === name);
  const last = fl[fl.length - 1];
  return last ? (last.value ?? '') : undefined;
}

export function boolFlag(df: ParsedDockerfile, ins: Instruction, name: string): boolean | undefined {
  const fl = ins.flags.filter((f) => f.name === name);
  if (fl.length === 0) return undefined;
  const v = fl[fl.length - 1]!.value;
  if (v === null || v === '' || v.toLowerCase() === 'true') return true;
  if (v.toLowerCase() === 'false') return false;
  throw dockerfileError(`expecting boolean value for flag ${name}, not: ${v}`, df.file, ins.line);
}

// ---- argument forms -------------------------------------------------------------------------------

/** `["a", "b"]` -> strings; null when the text is not a JSON array. Non-string elements are an error. */
export function parseJsonArray(rest: string): string[] | null {
  const t = rest.trimStart();
  if (!t.startsWith('[')) return null;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return null;
  }
  if (!Array.isArray(v)) return null;
  if (!v.every((x) => typeof x === 'string')) {
    throw new Error('when using JSON array syntax, arrays must be comprised of strings only');
  }
  return v as string[];
}

/** Whitespace split, nothing else (COPY/ADD/EXPOSE/FROM in shell form). */
export function splitWhitespace(rest: string): string[] {
  const t = rest.trim();
  return t === '' ? [] : t.split(/[ \t\r\n\v\f]+/);
}

/** Words split on unquoted whitespace; quotes and escapes are kept for the expansion step. */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let blankOK = false;
  let quote = '';
  const chars = Array.from(rest);
  for (let i = 0; i < chars.length; i++) {
    let ch = chars[i]!;
    if (!inWord && !quote) {
      if (/\s/.test(ch)) continue;
      inWord = true;
    }
    if (quote) {
      if (ch === quote) quote = '';
      else if (ch === escape && quote !== "'") {
        if (i + 1 === chars.length) {
          quote = '';
          continue;
        }
        word += ch;
        ch = chars[++i]!;
      }
      word += ch;
      continue;
    }
    if (/\s/.test(ch)) {
      if (blankOK || word.length > 0) words.push(word);
      word = '';
      inWord = false;
      blankOK = false;
      continue;
    }
    if (ch === "'" || ch === '"') {
      quote = ch;
      blankOK = true;
    }
    if (ch === escape) {
      if (i + 1 === chars.length) continue;
      word += ch;
      ch = chars[++i]!;
    }
    word += ch;
  }
  if ((inWord || quote) && (blankOK || word.length > 0)) words.push(word);
  return words;
}

export interface NameVal {
  key: string;
  value: string;
  /** Legacy `ENV key value` form (no `=`). */
  legacy: boolean;
}

/** ENV/LABEL arguments: `k=v k2="v 2"`, or the legacy `key rest of line`. */
export function parseNameVal(rest: string, escape: string, keyword: string): NameVal[] {
  const words = parseWords(rest, escape);
  if (words.length === 0) throw new Error(`${keyword} requires at least one argument`);
  if (!words[0]!.includes('=')) {
    const parts = rest.trim().split(/[ \t\r\n\v\f]+/);
    if (parts.length < 2) throw new Error(`${keyword} must have two arguments`);
    const m = /^(\S+)[ \t\r\n\v\f]+([\s\S]*)$/.exec(rest.trim())!;
    return [{ key: m[1]!, value: m[2]!, legacy: true }];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq < 0) throw new Error(`Syntax error - can't find = in "${w}". Must be of the form: name=value`);
    if (eq === 0) throw new Error(`${keyword} names can not be blank`);
    return { key: w.slice(0, eq), value: w.slice(eq + 1), legacy: false };
  });
}
