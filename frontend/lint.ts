// The `frontend.lint` subrequest (`docker buildx build --check`): BuildKit's check rules, reported in the
// order BuildKit reports them. First what the parser sees (empty continuation lines), then instruction
// syntax (stage name and keyword casing, MAINTAINER, duplicate or reserved stage names, mixed keyword
// casing), then the FROM lines against the global ARGs, and last everything found while translating every
// stage (`convert.ts` with a LintSink). A build error ends the translation and is returned alongside.
import { ObdkitError } from '../src/util/errors.js';
import { convertDockerfile, type ConvertOptions } from './convert.js';
import { parseDockerfile, type ParsedDockerfile } from './instructions.js';
import { LintCollector, reportAt, type LintLocation, type LintWarning } from './lint-rules.js';
import { hostPlatform, platformArgs } from './platform.js';
import { normalizeImageRef } from './reference.js';
import { ShellLex } from './shell-lex.js';
import { evalMetaArgs, splitStages } from './stages.js';

export interface SourceInfo {
  filename: string;
  /** The Dockerfile bytes, base64 (Go's []byte JSON encoding). */
  data: string;
  language: string;
}

export interface LintResult {
  warnings: LintWarning[];
  sources: SourceInfo[];
  buildError?: { message: string; location: LintLocation };
}

export type LintOptions = Omit<ConvertOptions, 'dockerfile' | 'lint' | 'allStages'>;

const RESERVED_STAGE_NAMES = new Set(['context', 'scratch']);

export async function lint(dockerfile: string, opts: LintOptions = {}): Promise<LintResult> {
  const filename = opts.filename ?? 'Dockerfile';
  const sources: SourceInfo[] = [{ filename, data: Buffer.from(dockerfile).toString('base64'), language: 'Dockerfile' }];
  const sink = new LintCollector();
  const fail = (err: unknown): LintResult => {
    const line = err instanceof ObdkitError && typeof err.context.line === 'number' ? err.context.line : 0;
    const prefix = `${filename}:${line}: `;
    let message = err instanceof Error ? err.message : String(err);
    if (message.startsWith(prefix)) message = message.slice(prefix.length);
    return { warnings: sink.warnings, sources, buildError: { message, location: { ranges: [{ start: { line }, end: { line } }] } } };
  };

  let df: ParsedDockerfile;
  try {
    df = parseDockerfile(dockerfile, filename);
  } catch (err) {
    return fail(err);
  }
  for (const ins of df.instructions) {
    if (ins.emptyContinuationLine !== undefined) sink.report('NoEmptyContinuation', 'Empty continuation line', ins.emptyContinuationLine);
  }
  try {
    syntaxRules(df, sink);
    fromRules(df, opts, sink);
    await convertDockerfile({ ...opts, dockerfile, lint: sink, allStages: true });
  } catch (err) {
    return fail(err);
  }
  return { warnings: sink.warnings, sources };
}

function syntaxRules(df: ParsedDockerfile, sink: LintCollector): void {
  for (const ins of df.instructions) {
    if (ins.keyword === 'FROM') {
      const words = ins.rest.trim().split(/\s+/);
      if (words.length === 3 && words[2] !== words[2]!.toLowerCase()) {
        reportAt(sink, 'StageNameCasing', `Stage name '${words[2]}' should be lowercase`, ins);
      }
      if (words.length >= 3) {
        // A FROM keyword of mixed case is ConsistentInstructionCasing's business, not this rule's.
        const k = ins.rawKeyword;
        const as = words[1]!;
        const ok = k === k.toLowerCase() ? as === as.toLowerCase() : k === k.toUpperCase() ? as === as.toUpperCase() : true;
        if (!ok) reportAt(sink, 'FromAsCasing', `'${as}' and '${k}' keywords' casing do not match`, ins);
      }
    }
    if (ins.keyword === 'MAINTAINER') {
      reportAt(sink, 'MaintainerDeprecated', 'Maintainer instruction is deprecated in favor of using label', ins);
    }
  }
  const { stages } = splitStages(df);
  const seen = new Set<string>();
  for (const s of stages) {
    if (!s.name) continue;
    if (RESERVED_STAGE_NAMES.has(s.name)) reportAt(sink, 'ReservedStageName', `Stage name should not use the same name as reserved stage ${JSON.stringify(s.name)}`, s.from);
    if (seen.has(s.name)) reportAt(sink, 'DuplicateStageName', `Duplicate stage name ${JSON.stringify(s.name)}, stage names should be unique`, s.from);
    seen.add(s.name);
  }
  // Keyword casing: the majority of self-consistent keywords decides.
  let lower = 0;
  let upper = 0;
  for (const ins of df.instructions) {
    const k = ins.rawKeyword;
    if (k === k.toLowerCase()) lower++;
    else if (k === k.toUpperCase()) upper++;
  }
  const majorityLower = lower > upper;
  for (const ins of df.instructions) {
    const k = ins.rawKeyword;
    const want = majorityLower ? k.toLowerCase() : k.toUpperCase();
    if (k !== want) {
      reportAt(sink, 'ConsistentInstructionCasing', `Command '${k}' should match the case of the command majority (${majorityLower ? 'lowercase' : 'uppercase'})`, ins);
    }
  }
}

/** FROM lines against the global ARGs: defaults that give no image, undeclared args, a redundant platform. */
function fromRules(df: ParsedDockerfile, opts: LintOptions, sink: LintCollector): void {
  const { metaArgs, stages } = splitStages(df);
  const build = opts.buildPlatform ?? hostPlatform();
  const auto = platformArgs(build, opts.targetPlatform ?? build, '');
  const lex = new ShellLex(df.escapeToken);
  // Defaults only: what the Dockerfile gives when no --build-arg is passed.
  const defaults = evalMetaArgs(df, metaArgs, {}, auto);
  const declared = new Set([...auto.map(([k]) => k), ...defaults.args.map((a) => a.key)]);
  const stageNames = new Set(stages.map((s) => s.name).filter((n) => n));

  for (const s of stages) {
    if (!s.rawBase.includes('$')) continue;
    let base: string;
    try {
      base = lex.processWord(s.rawBase, defaults.scope);
    } catch {
      continue;
    }
    let valid = base !== '';
    if (valid && base.toLowerCase() !== 'scratch' && !stageNames.has(base.toLowerCase())) {
      try {
        normalizeImageRef(base);
      } catch {
        valid = false;
      }
    }
    if (!valid) reportAt(sink, 'InvalidDefaultArgInFrom', `Default value for ARG ${s.rawBase} results in empty or invalid base image name`, s.from);
  }

  const scope = evalMetaArgs(df, metaArgs, opts.buildArgs ?? {}, auto).scope;
  for (const s of stages) {
    // The translation stops at a FROM that expands to nothing; so do these checks.
    try {
      if (lex.processWord(s.rawBase, scope) === '') break;
    } catch {
      break;
    }
    if (s.platformFlag !== undefined) {
      const r = lex.process(s.platformFlag, scope);
      if (r.matched.size === 1 && r.unmatched.size === 0 && r.matched.has('TARGETPLATFORM') && r.result === scope.get('TARGETPLATFORM')) {
        reportAt(sink, 'RedundantTargetPlatform', `Setting platform to predefined ${s.platformFlag} in FROM is redundant as this is the default behavior`, s.from);
      }
    }
    let unmatched: Set<string>;
    try {
      unmatched = lex.process(s.rawBase, scope).unmatched;
    } catch {
      continue;
    }
    for (const name of unmatched) {
      if (!declared.has(name)) reportAt(sink, 'UndefinedArgInFrom', `FROM argument '${name}' is not declared`, s.from);
    }
  }
}

/** Result.metadata for the lint subrequest: JSON, text, and the status buildx exits with. */
export function lintResult(r: LintResult): { metadata: Record<string, string> } {
  let txt = '';
  for (const w of r.warnings) {
    txt += `\nWARNING: ${w.ruleName} - ${w.url}\n${w.detail}\n`;
    const line = w.location.ranges[0]?.start.line;
    if (line !== undefined) txt += `${r.sources[0]?.filename ?? 'Dockerfile'}:${line}\n`;
  }
  if (r.buildError) txt += `\nERROR: ${r.buildError.message}\n`;
  const status = r.warnings.length > 0 || r.buildError ? 1 : 0;
  return {
    metadata: {
      'result.json': JSON.stringify(r, null, 2),
      'result.txt': txt,
      'result.statuscode': String(status),
      version: '1.0.0',
    },
  };
}
