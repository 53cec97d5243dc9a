// Answers to the frontend subrequests (`requestid`: frontend.targets, frontend.outline, frontend.lint,
// frontend.subrequests.describe) as plain data, with the JSON shapes of BuildKit's `frontend/subrequests/`
// (what `docker buildx build --call` renders), plus their `result.txt` renderings. Targets and outline
// read only the Dockerfile; lint (lint.ts) translates it and may resolve base images.
import {
  argPairs,
  evalMetaArgs,
  findStageIndex,
  resolveTarget,
  splitStages,
  docComment,
  type StageDef,
} from './stages.js';
import { parseDockerfile, type Instruction, type ParsedDockerfile } from './instructions.js';
import { hostPlatform, platformArgs } from './platform.js';
import { ShellLex } from './shell-lex.js';
import { parseMount } from './run-mount.js';
import type { Platform } from '../src/solver/ops.js';
import { ObdkitError } from '../src/util/errors.js';
import { lint, lintResult, type LintOptions } from './lint.js';

export const SUBREQUEST_VERSION = '1.0.0';

/** pb.Location as JSON: zero fields omitted, lines 1-based. */
export interface Location {
  sourceIndex?: number;
  ranges?: { start?: { line?: number; character?: number }; end?: { line?: number; character?: number } }[];
}

export interface Target {
  name?: string;
  default?: boolean;
  description?: string;
  base?: string;
  platform?: string;
  location?: Location;
}

export interface TargetList {
  targets: Target[];
  /** Dockerfile bytes, base64 (Go's []byte JSON encoding). */
  sources: string[];
}

export interface OutlineArg {
  name: string;
  description?: string;
  value?: string;
  location?: Location;
}

export interface OutlineSecret {
  name: string;
  required?: boolean;
  location?: Location;
}

export interface Outline {
  name?: string;
  description?: string;
  args?: OutlineArg[];
  secrets?: OutlineSecret[];
  ssh?: OutlineSecret[];
  sources?: string[];
}

export interface SubrequestResult {
  /** Result.metadata entries: `result.json`, `result.txt`, `version`. */
  metadata: Record<string, string>;
}

function location(ins: Instruction): Location {
  return { ranges: [{ start: { line: ins.line }, end: { line: ins.endLine } }] };
}

export function listTargets(dockerfile: string, filename = 'Dockerfile'): TargetList {
  const df = parseDockerfile(dockerfile, filename);
  const { stages } = splitStages(df);
  return {
    targets: stages.map((s, i) => {
      const t: Target = {};
      if (s.name) t.name = s.name;
      if (i === stages.length - 1) t.default = true;
      const d = docComment(s.comments, s.name);
      if (d) t.description = d;
      t.base = s.rawBase;
      if (s.platformFlag) t.platform = s.platformFlag;
      t.location = location(s.from);
      return t;
    }),
    sources: [Buffer.from(df.source).toString('base64')],
  };
}

export interface OutlineOptions {
  target?: string;
  buildArgs?: Record<string, string>;
  targetPlatform?: Platform;
  buildPlatform?: Platform;
  filename?: string;
}

/** The parameters a target takes: build args it reads (with defaults and doc comments), secrets, ssh. */
export function outline(dockerfile: string, opts: OutlineOptions = {}): Outline {
  const df = parseDockerfile(dockerfile, opts.filename ?? 'Dockerfile');
  const { metaArgs, stages } = splitStages(df);
  const targetIdx = resolveTarget(df, stages, opts.target);
  const build = opts.buildPlatform ?? hostPlatform();
  const auto = platformArgs(build, opts.targetPlatform ?? build, stages[targetIdx]!.name);
  const buildArgs = opts.buildArgs ?? {};
  const meta = evalMetaArgs(df, metaArgs, buildArgs, auto);
  const lex = new ShellLex(df.escapeToken);

  const reachable = reachableStages(df, stages, targetIdx, meta.scope);
  const args = new Map<string, OutlineArg & { line: number }>();
  const secrets = new Map<string, OutlineSecret & { line: number }>();
  const ssh = new Map<string, OutlineSecret & { line: number }>();
  const usedMeta = new Set<string>();

  for (const s of stages) {
    if (!reachable.has(s.index)) continue;
    // Global args a FROM line reads.
    for (const name of lex.process(s.rawBase + ' ' + (s.platformFlag ?? ''), meta.scope).matched) usedMeta.add(name);
    const env = new Map<string, string>();
    for (const ins of s.commands) {
      if (ins.keyword === 'ARG') {
        for (const p of argPairs(df, ins)) {
          if (p.value === undefined && !(p.key in buildArgs) && meta.scope.has(p.key)) {
            // Redeclared global: the global definition is the one to document.
            usedMeta.add(p.key);
            env.set(p.key, meta.scope.get(p.key)!);
            continue;
          }
          let value = buildArgs[p.key];
          if (value === undefined && p.value !== undefined) {
            try {
              value = lex.processWord(p.value, env);
            } catch {
              value = p.value;
            }
          }
          if (value !== undefined) env.set(p.key, value);
          if (!args.has(p.key)) {
            const a: OutlineArg & { line: number } = { name: p.key, line: ins.line, location: location(ins) };
            if (p.comment) a.description = p.comment;
            if (value) a.value = value;
            args.set(p.key, a);
          }
        }
      }
      if (ins.keyword === 'RUN') {
        for (const f of ins.flags) {
          if (f.name !== 'mount' || !f.value) continue;
          let m;
          try {
            m = parseMount(f.value, (w) => lex.processWord(w, env));
          } catch {
            continue;
          }
          if (m.type === 'secret') {
            const id = m.id ?? m.source ?? (m.target ? m.target.split('/').pop()! : (m.env ?? ''));
            if (!secrets.has(id)) secrets.set(id, { name: id, ...(m.required ? { required: true } : {}), location: location(ins), line: ins.line });
          } else if (m.type === 'ssh') {
            const id = m.id || 'default';
            if (!ssh.has(id)) ssh.set(id, { name: id, ...(m.required ? { required: true } : {}), location: location(ins), line: ins.line });
          }
        }
      }
    }
  }
  for (const ins of metaArgs) {
    for (const p of argPairs(df, ins)) {
      if (!usedMeta.has(p.key) || args.has(p.key)) continue;
      const value = meta.args.find((a) => a.key === p.key)?.value;
      const a: OutlineArg & { line: number } = { name: p.key, line: ins.line, location: location(ins) };
      if (p.comment) a.description = p.comment;
      if (value) a.value = value;
      args.set(p.key, a);
    }
  }
  const byLine = <T extends { line: number }>(m: Map<string, T>): Omit<T, 'line'>[] =>
    [...m.values()].sort((a, b) => a.line - b.line).map(({ line: _line, ...rest }) => rest);

  const target = stages[targetIdx]!;
  const out: Outline = {};
  if (target.name) out.name = target.name;
  const desc = docComment(target.comments, target.name);
  if (desc) out.description = desc;
  if (args.size) out.args = byLine(args);
  if (secrets.size) out.secrets = byLine(secrets);
  if (ssh.size) out.ssh = byLine(ssh);
  out.sources = [Buffer.from(df.source).toString('base64')];
  return out;
}

/** Stages the target builds on, copies from, or mounts from. */
function reachableStages(df: ParsedDockerfile, stages: StageDef[], targetIdx: number, scope: Map<string, string>): Set<number> {
  const lex = new ShellLex(df.escapeToken);
  const seen = new Set<number>();
  const visit = (i: number): void => {
    if (seen.has(i)) return;
    seen.add(i);
    const s = stages[i]!;
    let base = s.rawBase;
    try {
      base = lex.processWord(s.rawBase, scope);
    } catch {
      // leave unexpanded; an unknown base is an image
    }
    const b = stages.findIndex((p, j) => j < i && p.name !== '' && p.name === base.toLowerCase());
    if (b >= 0) visit(b);
    for (const ins of s.commands) {
      const refs: string[] = [];
      if (ins.keyword === 'COPY') {
        const f = ins.flags.find((x) => x.name === 'from');
        if (f?.value) refs.push(f.value);
      }
      if (ins.keyword === 'RUN') {
        for (const f of ins.flags) {
          const m = f.name === 'mount' && f.value ? /(?:^|,)from=([^,]*)/i.exec(f.value) : null;
          if (m?.[1]) refs.push(m[1]);
        }
      }
      for (const r of refs) {
        const j = findStageIndex(stages, r);
        if (j >= 0 && j !== i) visit(j);
      }
    }
  };
  visit(targetIdx);
  return seen;
}

/** Left-aligned columns, like Go's tabwriter with the given padding. */
function table(rows: string[][], pad: number): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + pad))).join('') + '\n')
    .join('');
}

export function targetsResult(list: TargetList): SubrequestResult {
  const rows = [['TARGET', 'DESCRIPTION']];
  for (const t of list.targets) {
    let name = t.name ?? '';
    if (name === '' && t.default) name = '(default)';
    else if (t.default) name = `${name} (default)`;
    rows.push([name, t.description ?? '']);
  }
  return { metadata: { 'result.json': JSON.stringify(list, null, 2), 'result.txt': table(rows, 1), version: SUBREQUEST_VERSION } };
}

export function outlineResult(o: Outline): SubrequestResult {
  let txt = '';
  if (o.name || o.description) {
    txt += table([['TARGET:', o.name || '(default)'], ...(o.description ? [['DESCRIPTION:', o.description]] : [])], 1) + '\n';
  }
  if (o.args?.length) txt += table([['BUILD ARG', 'VALUE', 'DESCRIPTION'], ...o.args.map((a) => [a.name, a.value ?? '', a.description ?? ''])], 3) + '\n';
  if (o.secrets?.length) txt += table([['SECRET', 'REQUIRED'], ...o.secrets.map((s) => [s.name, s.required ? 'true' : ''])], 3) + '\n';
  if (o.ssh?.length) txt += table([['SSH', 'REQUIRED'], ...o.ssh.map((s) => [s.name, s.required ? 'true' : ''])], 3) + '\n';
  return { metadata: { 'result.json': JSON.stringify(o, null, 2), 'result.txt': txt, version: SUBREQUEST_VERSION } };
}

interface RequestDescription {
  name: string;
  version: string;
  type: 'rpc';
  description: string;
  opts: { name: string; description: string }[] | null;
  inputs: null;
  metadata: { name: string; description: string }[];
  refs: null;
}

const meta = (...names: string[]): { name: string; description: string }[] => names.map((name) => ({ name, description: '' }));

/** What `frontend.subrequests.describe` lists, in BuildKit's shape. */
export const SUBREQUESTS: RequestDescription[] = [
  {
    name: 'frontend.outline',
    version: SUBREQUEST_VERSION,
    type: 'rpc',
    description: 'List all parameters current build target supports',
    opts: [{ name: 'target', description: 'Target build stage' }],
    inputs: null,
    metadata: meta('result.json', 'result.txt'),
    refs: null,
  },
  {
    name: 'frontend.targets',
    version: SUBREQUEST_VERSION,
    type: 'rpc',
    description: 'List all targets current build supports',
    opts: [],
    inputs: null,
    metadata: meta('result.json', 'result.txt'),
    refs: null,
  },
  {
    name: 'frontend.lint',
    version: SUBREQUEST_VERSION,
    type: 'rpc',
    description: 'Lint a Dockerfile',
    opts: [],
    inputs: null,
    metadata: meta('result.json', 'result.txt', 'result.statuscode'),
    refs: null,
  },
  {
    name: 'frontend.subrequests.describe',
    version: SUBREQUEST_VERSION,
    type: 'rpc',
    description: 'List available subrequest types',
    opts: null,
    inputs: null,
    metadata: meta('result.json', 'result.txt'),
    refs: null,
  },
];

export function describeResult(): SubrequestResult {
  const txt = table([['NAME', 'VERSION', 'DESCRIPTION'], ...SUBREQUESTS.map((r) => [r.name, r.version, r.description])], 3);
  return { metadata: { 'result.json': JSON.stringify(SUBREQUESTS, null, 2), 'result.txt': txt, version: SUBREQUEST_VERSION } };
}

export type SubrequestOptions = OutlineOptions & Omit<LintOptions, 'filename'>;

/**
 * Answers a `requestid` frontend attribute. Unknown ids fail with BuildKit's `unsupported request <id>`
 * (clients react to that exact text), so every id clients send is handled here.
 */
export async function runSubrequest(id: string, dockerfile: string, opts: SubrequestOptions = {}): Promise<SubrequestResult> {
  switch (id) {
    case 'frontend.outline':
      return outlineResult(outline(dockerfile, opts));
    case 'frontend.targets':
      return targetsResult(listTargets(dockerfile, opts.filename));
    case 'frontend.lint':
      return lintResult(await lint(dockerfile, opts));
    case 'frontend.subrequests.describe':
      return describeResult();
    default:
      throw new ObdkitError('EUNSUPPORTEDREQUEST', `unsupported request ${id}`);
  }
}
