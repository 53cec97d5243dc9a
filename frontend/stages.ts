// Stages and global ARGs: the syntactic split of a Dockerfile into FROM blocks, stage lookup by name or
// index, target selection, and global ARG evaluation (with the automatic platform args in scope). Shared by
// the graph translation (`convert.ts`) and the subrequests (`subrequests.ts`), which must agree on them.
import { ObdkitError } from '../src/util/errors.js';
import { allowFlags, dockerfileError, expand, parseWords, splitWhitespace, type Instruction, type ParsedDockerfile } from './instructions.js';
import { ShellLex } from './shell-lex.js';

const STAGE_NAME_RE = /^[a-z][a-z0-9-_.]*$/;

/** A stage after the syntactic pass: its FROM and commands, nothing resolved yet. */
export interface StageDef {
  index: number;
  name: string;
  from: Instruction;
  rawBase: string;
  platformFlag?: string;
  commands: Instruction[];
  comments: string[];
}

export interface MetaArg {
  key: string;
  value?: string;
  /** The default as written, before expansion. */
  rawDefault?: string;
  comment: string;
  line: number;
}

/** The syntactic pass: stages and global ARGs, with their errors located. */
export function splitStages(df: ParsedDockerfile): { metaArgs: Instruction[]; stages: StageDef[]; warnings: string[] } {
  const warnings: string[] = [];
  const metaArgs: Instruction[] = [];
  const stages: StageDef[] = [];
  for (const ins of df.instructions) {
    if (ins.keyword === 'FROM') {
      allowFlags(df, ins, ['platform']);
      const words = splitWhitespace(ins.rest);
      let name = '';
      if (words.length === 3 && words[1]!.toLowerCase() === 'as') {
        name = words[2]!.toLowerCase();
        if (!STAGE_NAME_RE.test(name)) {
          throw dockerfileError(`invalid name for build stage: "${words[2]}", name can't start with a number or contain symbols`, df.file, ins.line);
        }
        if (stages.some((s) => s.name === name)) {
          // BuildKit only warns (lint rule DuplicateStageName); references find the first stage of the name.
          warnings.push(`Duplicate stage name "${name}", stage names should be unique (line ${ins.line})`);
        }
      } else if (words.length !== 1) {
        throw dockerfileError('FROM requires either one or three arguments', df.file, ins.line);
      }
      const platformFlag = ins.flags.find((f) => f.name === 'platform')?.value ?? undefined;
      stages.push({ index: stages.length, name, from: ins, rawBase: words[0]!, platformFlag, commands: [], comments: ins.comments });
      continue;
    }
    if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw dockerfileError('no build stage in current context', df.file, ins.line);
      metaArgs.push(ins);
      continue;
    }
    stages[stages.length - 1]!.commands.push(ins);
  }
  if (stages.length === 0) throw dockerfileError('the Dockerfile has no FROM instruction', df.file, df.instructions[0]?.line ?? 1);
  return { metaArgs, stages, warnings };
}

/** ARG words: `NAME` or `NAME=default` (quotes kept for expansion), with doc comments. */
export function argPairs(df: ParsedDockerfile, ins: Instruction): { key: string; value?: string; comment: string }[] {
  const words = parseWords(ins.rest, df.escapeToken);
  if (words.length === 0) throw dockerfileError('ARG requires at least one argument', df.file, ins.line);
  return words.map((w) => {
    const eq = w.indexOf('=');
    const key = eq < 0 ? w : w.slice(0, eq);
    if (key === '') throw dockerfileError('ARG names can not be blank', df.file, ins.line);
    const comment = docComment(ins.comments, key);
    return eq < 0 ? { key, comment } : { key, value: w.slice(eq + 1), comment };
  });
}

export function docComment(comments: string[], name: string): string {
  if (!name) return '';
  for (const c of comments) if (c.startsWith(name + ' ')) return c.slice(name.length + 1);
  return '';
}

/** Global ARGs evaluated in order, with build-arg overrides and the automatic platform args in scope. */
export function evalMetaArgs(
  df: ParsedDockerfile,
  metaArgs: Instruction[],
  buildArgs: Record<string, string>,
  auto: [string, string][],
): { scope: Map<string, string>; args: MetaArg[] } {
  const lex = new ShellLex(df.escapeToken);
  const scope = new Map<string, string>();
  for (const [k, v] of auto) scope.set(k, buildArgs[k] ?? v);
  const args: MetaArg[] = [];
  for (const ins of metaArgs) {
    for (const p of argPairs(df, ins)) {
      let value: string | undefined;
      if (p.key in buildArgs) value = buildArgs[p.key];
      else if (p.value !== undefined) value = expand(df, ins, () => lex.processWord(p.value!, scope));
      if (value !== undefined) scope.set(p.key, value);
      args.push({ key: p.key, value, rawDefault: p.value, comment: p.comment, line: ins.line });
    }
  }
  return { scope, args };
}

export function findStageIndex(stages: { name: string }[], ref: string): number {
  if (/^\d+$/.test(ref)) {
    const i = Number(ref);
    return i < stages.length ? i : -1;
  }
  const lower = ref.toLowerCase();
  return stages.findIndex((s) => s.name !== '' && s.name === lower);
}

export function resolveTarget(df: ParsedDockerfile, stages: StageDef[], target: string | undefined): number {
  if (!target) return stages.length - 1;
  const i = stages.findIndex((s) => s.name === target.toLowerCase());
  if (i < 0) throw new ObdkitError('EDOCKERFILE', `target stage "${target}" could not be found`, { file: df.file });
  return i;
}
