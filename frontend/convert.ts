// Dockerfile -> build graph. A pure translation in the manner of BuildKit's dockerfile2llb: each stage
// starts from an image, `scratch` or an earlier stage; RUN becomes an exec op, COPY/ADD/WORKDIR file ops,
// everything else only changes the stage's image config. Only stages the target needs are translated
// (and only their base images resolved). Base image configs come from the injected `resolveImageConfig`,
// so this module does no I/O. Expansion follows BuildKit: ENV, ARG defaults, LABEL, WORKDIR, USER, EXPOSE,
// VOLUME, STOPSIGNAL, COPY/ADD paths and flags and RUN --mount values expand; RUN, CMD, ENTRYPOINT, SHELL,
// HEALTHCHECK and ONBUILD do not (the shell in the container does that at run time).
import { posix } from 'node:path';
import {
  vertexId,
  type BuildGraph,
  type ChownOpt,
  type CopyAction,
  type ExecMount,
  type FileAction,
  type HealthConfig,
  type ImageConfig,
  type ImageRuntimeConfig,
  type NetworkMode,
  type Op,
  type Platform,
  type Vertex,
  type VertexId,
} from '../src/solver/ops.js';
import { ObdkitError } from '../src/util/errors.js';
import {
  dockerfileError,
  parseDockerfile,
  parseHeredocWord,
  parseJsonArray,
  parseNameVal,
  parseWords,
  splitWhitespace,
  type Flag,
  type Instruction,
  type ParsedDockerfile,
} from './instructions.js';
import { ShellLex, envMap } from './shell-lex.js';
import { formatPlatform, hostPlatform, parsePlatform, platformArgs } from './platform.js';
import { normalizeImageRef, parseImageRef } from './reference.js';
import { parseMount, type MountSpec } from './run-mount.js';
import { parseGoDuration } from './duration.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_SHELL = ['/bin/sh', '-c'];
const PROXY_ARGS = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);
const STAGE_NAME_RE = /^[a-z][a-z0-9-_.]*$/;

/** What a registry says about a base image: its config, and the digest it resolved to (pins the source). */
export interface ResolvedImage {
  digest?: string;
  config: {
    os?: string;
    architecture?: string;
    variant?: string;
    author?: string;
    config?: ImageRuntimeConfig;
    history?: { created_by?: string; comment?: string; empty_layer?: boolean }[];
  };
}

export type ResolveImageConfig = (ref: string, platform: Platform) => Promise<ResolvedImage>;

export interface ConvertOptions {
  dockerfile: string;
  /** Name used in errors and locations (`Dockerfile`). */
  filename?: string;
  target?: string;
  buildArgs?: Record<string, string>;
  /** `--label` values, applied to the final image. */
  labels?: Record<string, string>;
  targetPlatform?: Platform;
  buildPlatform?: Platform;
  /** Exclude patterns from `.dockerignore` (already parsed). */
  excludes?: string[];
  /** Name of the local dir holding the build context. */
  contextName?: string;
  /** true: no cache for any step; a list: no cache for steps of these stages. */
  noCache?: boolean | string[];
  resolveImageConfig?: ResolveImageConfig;
  hostname?: string;
  /** Forces a network mode on every RUN (`force-network-mode`). */
  forceNetworkMode?: NetworkMode;
}

export interface StageSummary {
  index: number;
  name: string;
  /** The expanded base: an image reference, `scratch`, or a stage name. */
  base: string;
  platform: string;
  /** Whether the target needs this stage. */
  used: boolean;
  vertex?: VertexId;
  line: number;
}

export interface ConvertResult {
  graph: BuildGraph;
  target: VertexId;
  targetStage: string;
  image: ImageConfig;
  platform: Platform;
  stages: StageSummary[];
  warnings: string[];
}

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
export function splitStages(df: ParsedDockerfile): { metaArgs: Instruction[]; stages: StageDef[] } {
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
        if (stages.some((s) => s.name === name)) throw dockerfileError(`duplicate stage name "${name}"`, df.file, ins.line);
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
  return { metaArgs, stages };
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

function expand<T>(df: ParsedDockerfile, ins: Instruction, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw dockerfileError((err as Error).message, df.file, ins.line, err);
  }
}

function allowFlags(df: ParsedDockerfile, ins: Instruction, allowed: string[]): void {
  for (const f of ins.flags) {
    if (!allowed.includes(f.name)) throw dockerfileError(`unknown flag: ${f.name}`, df.file, ins.line);
  }
}

function flagValue(ins: Instruction, name: string): string | undefined {
  const fl = ins.flags.filter((f) => f.name === name);
  const last = fl[fl.length - 1];
  return last ? (last.value ?? '') : undefined;
}

function boolFlag(df: ParsedDockerfile, ins: Instruction, name: string): boolean | undefined {
  const fl = ins.flags.filter((f) => f.name === name);
  if (fl.length === 0) return undefined;
  const v = fl[fl.length - 1]!.value;
  if (v === null || v === '' || v.toLowerCase() === 'true') return true;
  if (v.toLowerCase() === 'false') return false;
  throw dockerfileError(`expecting boolean value for flag ${name}, not: ${v}`, df.file, ins.line);
}

interface StageState {
  def: StageDef;
  /** Name in progress output: the stage name, `stage-N` for unnamed ones, nothing in one-stage files. */
  displayName: string;
  platform: Platform;
  base: string;
  baseStage?: StageState;
  baseImage?: ResolvedImage;
  vertex?: VertexId;
  image: ImageConfig;
  /** The build's environment for RUN and expansion: image ENV plus ARG values, in definition order. */
  env: Map<string, string>;
  cmdSet: boolean;
  cmdIndex: number;
  cmdTotal: number;
  commands: { ins: Instruction; onbuild: boolean; df: ParsedDockerfile }[];
  dispatched: boolean;
  ignoreCache: boolean;
}

/** Translates a Dockerfile into a build graph for one target stage. */
export async function convertDockerfile(opts: ConvertOptions): Promise<ConvertResult> {
  return new Converter(opts).run();
}

class Converter {
  private readonly df: ParsedDockerfile;
  private readonly graph: BuildGraph = { vertices: {} };
  private readonly buildArgs: Record<string, string>;
  private readonly buildPlatform: Platform;
  private readonly targetPlatform: Platform;
  private readonly warnings: string[] = [];
  private readonly usedBuildArgs = new Set<string>();
  private contextVertex: VertexId | undefined;
  private scratchVertex: VertexId | undefined;
  private globalScope = new Map<string, string>();

  constructor(private readonly opts: ConvertOptions) {
    this.df = parseDockerfile(opts.dockerfile, opts.filename ?? 'Dockerfile');
    this.buildArgs = opts.buildArgs ?? {};
    this.buildPlatform = opts.buildPlatform ?? hostPlatform();
    this.targetPlatform = opts.targetPlatform ?? this.buildPlatform;
  }

  async run(): Promise<ConvertResult> {
    const df = this.df;
    const { metaArgs, stages } = splitStages(df);
    const targetIdx = resolveTarget(df, stages, this.opts.target);
    const targetName = stages[targetIdx]!.name;
    const auto = platformArgs(this.buildPlatform, this.targetPlatform, targetName);
    const meta = evalMetaArgs(df, metaArgs, this.buildArgs, auto);
    this.globalScope = meta.scope;
    for (const a of meta.args) this.usedBuildArgs.add(a.key);

    // Expand every FROM first: stage references decide reachability.
    const lex = new ShellLex(df.escapeToken);
    const states: StageState[] = stages.map((def) => {
      const base = expand(df, def.from, () => lex.processWord(def.rawBase, this.globalScope));
      if (base === '') throw dockerfileError(`base name (${def.rawBase}) should not be blank`, df.file, def.from.line);
      let platform = this.targetPlatform;
      if (def.platformFlag !== undefined) {
        const p = expand(df, def.from, () => lex.processWord(def.platformFlag!, this.globalScope));
        platform = expand(df, def.from, () => parsePlatform(p));
      }
      const noCache = this.opts.noCache;
      return {
        def,
        displayName: def.name || (stages.length === 1 ? '' : `stage-${def.index}`),
        platform,
        base,
        image: emptyImage(platform),
        env: new Map(),
        cmdSet: false,
        cmdIndex: 0,
        cmdTotal: 0,
        commands: def.commands.map((ins) => ({ ins, onbuild: false, df })),
        dispatched: false,
        ignoreCache: noCache === true || (Array.isArray(noCache) && noCache.includes(def.name)),
      };
    });
    for (const s of states) {
      const ref = states.slice(0, s.def.index).find((p) => p.def.name !== '' && p.def.name === s.base.toLowerCase());
      if (ref) s.baseStage = ref;
    }

    // Walk from the target: a stage is needed when the target builds on it, copies or mounts from it.
    const used = new Set<number>();
    const visit = async (s: StageState): Promise<void> => {
      if (used.has(s.def.index)) return;
      used.add(s.def.index);
      if (s.baseStage) await visit(s.baseStage);
      else if (s.base.toLowerCase() !== 'scratch') await this.resolveBase(s);
      const triggers = s.baseStage ? [] : (s.baseImage?.config.config?.OnBuild ?? []);
      for (const t of triggers) {
        const tdf = expand(df, s.def.from, () => parseDockerfile(t, df.file));
        for (const ins of tdf.instructions) {
          if (['ONBUILD', 'FROM', 'MAINTAINER'].includes(ins.keyword)) {
            throw dockerfileError(`${ins.keyword} isn't allowed as an ONBUILD trigger`, df.file, s.def.from.line);
          }
          // Triggers run first and are reported at the FROM that pulled them in.
          s.commands.splice(s.commands.filter((c) => c.onbuild).length, 0, {
            ins: { ...ins, line: s.def.from.line, endLine: s.def.from.line },
            onbuild: true,
            df: tdf,
          });
        }
      }
      for (const c of s.commands) {
        for (const dep of this.stageDeps(c.df, c.ins, states, s)) await visit(dep);
      }
    };
    await visit(states[targetIdx]!);

    for (const s of states) {
      if (!used.has(s.def.index)) continue;
      await this.dispatchStage(s, states);
    }

    const t = states[targetIdx]!;
    for (const k of Object.keys(this.buildArgs)) {
      if (!this.usedBuildArgs.has(k) && !PROXY_ARGS.has(k) && !k.startsWith('BUILDKIT_') && k !== 'SOURCE_DATE_EPOCH') {
        this.warnings.push(`build argument ${k} was not consumed`);
      }
    }
    if (this.opts.labels) {
      t.image.config.Labels = { ...(t.image.config.Labels ?? {}), ...this.opts.labels };
    }
    const summaries: StageSummary[] = states.map((s) => ({
      index: s.def.index,
      name: s.def.name,
      base: s.base,
      platform: formatPlatform(s.platform),
      used: used.has(s.def.index),
      vertex: s.vertex,
      line: s.def.from.line,
    }));
    return {
      graph: pruneGraph(this.graph, t.vertex!),
      target: t.vertex!,
      targetStage: t.def.name,
      image: t.image,
      platform: t.platform,
      stages: summaries,
      warnings: this.warnings,
    };
  }

  /** Stages a command reads from (COPY --from, RUN --mount from=); images named there are not stages. */
  private stageDeps(df: ParsedDockerfile, ins: Instruction, states: StageState[], self: StageState): StageState[] {
    const names: string[] = [];
    if (ins.keyword === 'COPY') {
      const from = flagValue(ins, 'from');
      if (from) names.push(from);
    }
    if (ins.keyword === 'RUN') {
      for (const f of ins.flags) {
        if (f.name !== 'mount' || !f.value) continue;
        const m = /(?:^|,)from=([^,]*)/i.exec(f.value);
        if (m && m[1]) names.push(m[1].replace(/^"|"$/g, ''));
      }
    }
    const out: StageState[] = [];
    for (const n of names) {
      if (n.includes('$')) {
        throw dockerfileError(
          ins.keyword === 'COPY'
            ? 'variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround'
            : "'from' doesn't support variable expansion, define alias stage instead",
          df.file,
          ins.line,
        );
      }
      const dep = findStage(states, n);
      if (dep === self) throw dockerfileError(`circular dependency detected on stage: ${self.def.name || self.def.index}`, df.file, ins.line);
      if (dep) out.push(dep);
      else if (/^\d+$/.test(n)) throw dockerfileError(`invalid stage index ${n}`, df.file, ins.line);
    }
    return out;
  }

  private async resolveBase(s: StageState): Promise<void> {
    if (s.baseImage) return;
    let ref: string;
    try {
      ref = normalizeImageRef(s.base);
    } catch (err) {
      throw dockerfileError((err as Error).message, this.df.file, s.def.from.line, err);
    }
    if (!this.opts.resolveImageConfig) {
      s.baseImage = { config: {} };
      return;
    }
    try {
      s.baseImage = await this.opts.resolveImageConfig(ref, s.platform);
    } catch (err) {
      throw new ObdkitError('ERESOLVE', `failed to resolve source metadata for ${ref}: ${(err as Error).message}`, {
        file: this.df.file,
        line: s.def.from.line,
        ref,
      }, { cause: err });
    }
  }

  private addVertex(op: Op, inputs: VertexId[], name: string, ins?: Instruction, ignoreCache = false): VertexId {
    const id = vertexId(op, inputs);
    if (!this.graph.vertices[id]) {
      const v: Vertex = { id, op, inputs, name };
      if (ins) v.location = { file: this.df.file, line: ins.line, endLine: ins.endLine };
      if (ignoreCache) v.ignoreCache = true;
      this.graph.vertices[id] = v;
    }
    return id;
  }

  private context(): VertexId {
    if (!this.contextVertex) {
      this.contextVertex = this.addVertex(
        { kind: 'local', name: this.opts.contextName ?? 'context', excludes: this.opts.excludes ?? [] },
        [],
        '[internal] load build context',
      );
    }
    return this.contextVertex;
  }

  private scratch(): VertexId {
    this.scratchVertex ??= this.addVertex({ kind: 'scratch' }, [], 'scratch');
    return this.scratchVertex;
  }

  private prefix(s: StageState, text: string, onbuild: boolean): string {
    if (s.cmdTotal === 0) return text;
    s.cmdIndex++;
    const width = 1 + Math.floor(Math.log10(s.cmdTotal));
    let out = '[';
    if (s.displayName) out += s.displayName + ' ';
    out += `${String(s.cmdIndex).padStart(width, ' ')}/${s.cmdTotal}] `;
    if (onbuild) out += 'ONBUILD ';
    return out + text;
  }

  /** The step's display text: the instruction as written, known variables filled in, keyword upper-cased. */
  private displayText(s: StageState, df: ParsedDockerfile, ins: Instruction): string {
    let text = ins.original;
    try {
      text = new ShellLex(df.escapeToken).processWord(text, s.env, { rawQuotes: true, skipUnsetEnv: true });
    } catch {
      // unbalanced quotes and the like: show it as written
    }
    const sp = text.indexOf(' ');
    return sp < 0 ? text.toUpperCase() : text.slice(0, sp).toUpperCase() + text.slice(sp);
  }

  private async dispatchStage(s: StageState, states: StageState[]): Promise<void> {
    const df = this.df;
    const from = s.def.from;
    let total = 0;
    if (!s.baseStage && s.base.toLowerCase() !== 'scratch') total = 1;
    for (const c of s.commands) if (['ADD', 'COPY', 'RUN', 'WORKDIR'].includes(c.ins.keyword)) total++;
    s.cmdTotal = total;

    if (s.baseStage) {
      const b = s.baseStage;
      if (!b.dispatched) throw dockerfileError(`stage ${b.def.name} is not built before ${s.def.name || s.def.index}`, df.file, from.line);
      s.vertex = b.vertex;
      s.image = structuredClone(b.image);
      s.env = new Map(envMap(s.image.config.Env ?? []));
      s.platform = b.platform;
      s.cmdSet = false;
    } else if (s.base.toLowerCase() === 'scratch') {
      s.vertex = this.scratch();
      s.image = emptyImage(s.platform);
      s.env = envMap(s.image.config.Env ?? []);
    } else {
      const resolved = s.baseImage ?? { config: {} };
      let ref = normalizeImageRef(s.base);
      if (resolved.digest && !parseImageRef(ref).digest) ref = `${ref}@${resolved.digest}`;
      s.vertex = this.addVertex({ kind: 'image', ref, platform: s.platform }, [], this.prefix(s, `FROM ${ref}`, false), from, s.ignoreCache);
      s.image = imageFromResolved(resolved, s.platform);
      s.env = envMap(s.image.config.Env ?? []);
    }
    // Base-image triggers have been queued as commands; the new image does not inherit them.
    if (!s.baseStage) delete s.image.config.OnBuild;

    for (const c of s.commands) {
      await this.dispatch(s, c.df, c.ins, c.onbuild, states);
    }
    s.dispatched = true;
  }

  private async dispatch(s: StageState, df: ParsedDockerfile, ins: Instruction, onbuild: boolean, states: StageState[]): Promise<void> {
    const lex = new ShellLex(df.escapeToken);
    const word = (w: string): string => expand(df, ins, () => lex.processWord(w, s.env));
    const cfg = s.image.config;
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const history = (createdBy: string, emptyLayer: boolean): void => {
      s.image.history.push(emptyLayer ? { created_by: createdBy, comment: 'buildkit.dockerfile.v0', empty_layer: true } : { created_by: createdBy, comment: 'buildkit.dockerfile.v0' });
    };
    const noFlags = (): void => allowFlags(df, ins, []);

    switch (ins.keyword) {
      case 'ENV': {
        noFlags();
        const pairs = expand(df, ins, () => parseNameVal(ins.rest, df.escapeToken, 'ENV'));
        // Every pair is expanded against the environment before this instruction.
        const expanded = pairs.map((p) => ({ key: word(p.key), value: word(p.value) }));
        for (const p of expanded) {
          s.env.delete(p.key);
          s.env.set(p.key, p.value);
          cfg.Env = setEnv(cfg.Env ?? [], p.key, p.value);
        }
        history('ENV ' + expanded.map((p) => `${p.key}=${p.value}`).join(' '), true);
        return;
      }
      case 'ARG': {
        noFlags();
        const parts: string[] = [];
        for (const p of argPairs(df, ins)) {
          this.usedBuildArgs.add(p.key);
          let value: string | undefined;
          if (p.key in this.buildArgs) value = this.buildArgs[p.key];
          else if (p.value !== undefined) value = word(p.value);
          else if (this.globalScope.has(p.key)) value = this.globalScope.get(p.key);
          if (value !== undefined) {
            s.env.delete(p.key);
            s.env.set(p.key, value);
          }
          parts.push(value === undefined ? p.key : `${p.key}=${value}`);
        }
        history('ARG ' + parts.join(' '), true);
        return;
      }
      case 'LABEL': {
        noFlags();
        const pairs = expand(df, ins, () => parseNameVal(ins.rest, df.escapeToken, 'LABEL'));
        const expanded = pairs.map((p) => ({ key: word(p.key), value: word(p.value) }));
        cfg.Labels ??= {};
        for (const p of expanded) cfg.Labels[p.key] = p.value;
        history('LABEL ' + expanded.map((p) => `${p.key}=${p.value}`).join(' '), true);
        return;
      }
      case 'MAINTAINER': {
        noFlags();
        if (ins.rest === '') throw err('MAINTAINER requires exactly one argument');
        s.image.author = ins.rest;
        history('MAINTAINER ' + ins.rest, true);
        return;
      }
      case 'USER': {
        noFlags();
        const words = splitWhitespace(ins.rest);
        if (words.length !== 1) throw err('USER requires exactly one argument');
        cfg.User = word(ins.rest);
        history('USER ' + cfg.User, true);
        return;
      }
      case 'WORKDIR': {
        noFlags();
        if (ins.rest === '') throw err('WORKDIR requires exactly one argument');
        const p = word(ins.rest);
        if (p === '') throw err('cannot normalize nothing');
        const wd = posix.join('/', p.startsWith('/') ? '' : (cfg.WorkingDir ?? '/'), p);
        cfg.WorkingDir = wd;
        if (wd !== '/') {
          const chown = cfg.User ? parseChown(cfg.User) : undefined;
          const action: FileAction = { action: 'mkdir', path: wd, mode: 0o755, parents: true, ...(chown ? { chown } : {}) };
          s.vertex = this.addVertex(
            { kind: 'file', base: s.vertex, actions: [action] },
            [s.vertex!],
            this.prefix(s, this.displayText(s, df, ins), onbuild),
            ins,
            s.ignoreCache,
          );
        }
        history('WORKDIR ' + wd, wd === '/');
        return;
      }
      case 'EXPOSE': {
        noFlags();
        const words = splitWhitespace(ins.rest);
        if (words.length === 0) throw err('EXPOSE requires at least one argument');
        cfg.ExposedPorts ??= {};
        const added: string[] = [];
        for (const w of words) {
          for (const spec of expand(df, ins, () => lex.processWords(w, s.env))) {
            for (const port of expand(df, ins, () => parsePortSpec(spec))) {
              cfg.ExposedPorts[port] = {};
              added.push(port);
            }
          }
        }
        history('EXPOSE map[' + added.map((p) => `${p}:{}`).join(' ') + ']', true);
        return;
      }
      case 'VOLUME': {
        noFlags();
        const list = expand(df, ins, () => parseJsonArray(ins.rest)) ?? splitWhitespace(ins.rest);
        if (list.length === 0) throw err('VOLUME requires at least one argument');
        cfg.Volumes ??= {};
        for (const raw of list) {
          const v = word(raw.trim());
          if (v === '') throw err('VOLUME specified can not be an empty string');
          cfg.Volumes[v] = {};
        }
        history('VOLUME ' + JSON.stringify(list), true);
        return;
      }
      case 'STOPSIGNAL': {
        noFlags();
        if (splitWhitespace(ins.rest).length !== 1) throw err('STOPSIGNAL requires exactly one argument');
        const sig = word(ins.rest);
        if (!/^(SIG[A-Z0-9+-]+|[A-Z0-9+-]+|\d+)$/.test(sig)) throw err(`Invalid signal: ${sig}`);
        cfg.StopSignal = sig;
        history('STOPSIGNAL ' + sig, true);
        return;
      }
      case 'SHELL': {
        noFlags();
        const list = expand(df, ins, () => parseJsonArray(ins.rest));
        if (!list) throw err('SHELL requires the arguments to be in JSON form');
        if (list.length === 0) throw err('SHELL requires at least one argument');
        cfg.Shell = list;
        history('SHELL ' + JSON.stringify(list), true);
        return;
      }
      case 'CMD':
      case 'ENTRYPOINT': {
        noFlags();
        const json = expand(df, ins, () => parseJsonArray(ins.rest));
        let args: string[];
        if (json) args = json;
        else args = ins.rest === '' && ins.keyword === 'ENTRYPOINT' ? [] : [...(cfg.Shell ?? DEFAULT_SHELL), ins.rest];
        if (ins.keyword === 'CMD') {
          cfg.Cmd = args;
          s.cmdSet = true;
        } else {
          cfg.Entrypoint = args.length ? args : undefined;
          // A new ENTRYPOINT drops a CMD that came from the base image.
          if (!s.cmdSet) delete cfg.Cmd;
        }
        history(`${ins.keyword} ${JSON.stringify(args)}`, true);
        return;
      }
      case 'HEALTHCHECK': {
        cfg.Healthcheck = this.healthcheck(df, ins);
        history('HEALTHCHECK ' + JSON.stringify(cfg.Healthcheck), true);
        return;
      }
      case 'ONBUILD': {
        noFlags();
        const trigger = ins.original.replace(/^\s*ONBUILD\s*/i, '');
        const kw = (trigger.split(/\s+/)[0] ?? '').toUpperCase();
        if (kw === '') throw err('ONBUILD requires at least one argument');
        if (kw === 'ONBUILD') throw err('Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
        if (kw === 'MAINTAINER' || kw === 'FROM') throw err(`${kw} isn't allowed as an ONBUILD trigger`);
        cfg.OnBuild = [...(cfg.OnBuild ?? []), trigger];
        history('ONBUILD ' + trigger, true);
        return;
      }
      case 'RUN':
        return this.dispatchRun(s, df, ins, onbuild, states);
      case 'COPY':
      case 'ADD':
        return this.dispatchCopy(s, df, ins, onbuild, states);
      case 'FROM':
        throw err('FROM is not allowed here');
      default:
        throw err(`unknown instruction: ${ins.keyword}`);
    }
  }

  private healthcheck(df: ParsedDockerfile, ins: Instruction): HealthConfig {
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const m = /^(\S+)\s*([\s\S]*)$/.exec(ins.rest);
    if (!m) throw err('HEALTHCHECK requires at least one argument');
    const typ = m[1]!.toUpperCase();
    const cmd = m[2]!;
    if (typ === 'NONE') {
      if (cmd.trim() !== '') throw err('HEALTHCHECK NONE takes no arguments');
      if (ins.flags.length) throw err(`unknown flag: ${ins.flags[0]!.name}`);
      return { Test: ['NONE'] };
    }
    allowFlags(df, ins, ['interval', 'timeout', 'start-period', 'start-interval', 'retries']);
    if (typ !== 'CMD') throw err(`Unknown type "${typ}" in HEALTHCHECK (try CMD)`);
    const json = expand(df, ins, () => parseJsonArray(cmd));
    let test: string[];
    if (json) {
      if (json.length === 0) throw err('Missing command after HEALTHCHECK CMD');
      test = ['CMD', ...json];
    } else {
      if (cmd.trim() === '') throw err('Missing command after HEALTHCHECK CMD');
      test = ['CMD-SHELL', cmd];
    }
    const hc: HealthConfig = { Test: test };
    const dur = (name: string): number | undefined => {
      const v = flagValue(ins, name);
      if (v === undefined || v === '') return undefined;
      const ns = expand(df, ins, () => parseGoDuration(v));
      if (ns === 0) return undefined;
      if (ns < 1_000_000) throw err(`Interval "${name}" cannot be less than 1ms`);
      return ns;
    };
    const interval = dur('interval');
    const timeout = dur('timeout');
    const startPeriod = dur('start-period');
    const startInterval = dur('start-interval');
    if (interval !== undefined) hc.Interval = interval;
    if (timeout !== undefined) hc.Timeout = timeout;
    if (startPeriod !== undefined) hc.StartPeriod = startPeriod;
    if (startInterval !== undefined) hc.StartInterval = startInterval;
    const retries = flagValue(ins, 'retries');
    if (retries !== undefined && retries !== '') {
      if (!/^-?\d+$/.test(retries)) throw err(`strconv.ParseInt: parsing "${retries}": invalid syntax`);
      const n = Number(retries);
      if (n < 0) throw err(`--retries cannot be negative (${n})`);
      hc.Retries = n;
    }
    return hc;
  }

  /** Where another stage, an image or the context is read from in COPY --from / RUN --mount from=. */
  private sourceVertex(s: StageState, df: ParsedDockerfile, ins: Instruction, from: string | undefined, states: StageState[]): VertexId {
    if (from === undefined || from === '') return this.context();
    const st = findStage(states, from);
    if (st) {
      if (!st.dispatched || st.def.index >= s.def.index) {
        throw dockerfileError(`cannot copy from stage "${from}", it needs to be defined before current stage "${s.def.name || s.def.index}"`, df.file, ins.line);
      }
      return st.vertex!;
    }
    let ref: string;
    try {
      ref = normalizeImageRef(from);
    } catch (e) {
      throw dockerfileError((e as Error).message, df.file, ins.line, e);
    }
    return this.addVertex({ kind: 'image', ref, platform: s.platform }, [], `FROM ${ref}`, ins, s.ignoreCache);
  }

  private async dispatchRun(s: StageState, df: ParsedDockerfile, ins: Instruction, onbuild: boolean, states: StageState[]): Promise<void> {
    allowFlags(df, ins, ['mount', 'network', 'security', 'device']);
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const cfg = s.image.config;
    const shell = cfg.Shell ?? DEFAULT_SHELL;
    const json = expand(df, ins, () => parseJsonArray(ins.rest));
    let args: string[];
    let nameSuffix = '';
    const mounts: ExecMount[] = [];
    const inputs: VertexId[] = [s.vertex!];
    if (json && ins.heredocs.length === 0) {
      args = json;
    } else if (ins.heredocs.length > 0) {
      const single = parseHeredocWord(ins.rest);
      const h = ins.heredocs[0]!;
      if (single && ins.heredocs.length === 1) {
        const data = h.chomp ? chompTabs(h.content) : h.content;
        if (data.startsWith('#!')) {
          // A script with its own interpreter: provide it as a file and run that file.
          const file = this.addVertex(
            { kind: 'file', actions: [{ action: 'mkfile', path: '/' + h.name, mode: 0o755, data }] },
            [],
            'preparing inline document',
          );
          mounts.push({ type: 'bind', target: '/dev/pipes/', source: '/', from: file, readonly: true });
          inputs.push(file);
          args = [...shell, posix.join('/dev/pipes/', h.name)];
        } else {
          args = [...shell, data];
        }
        nameSuffix = ` (${summarizeHeredoc(h.content)})`;
      } else {
        let b = ins.rest;
        for (const d of ins.heredocs) b += '\n' + d.content + d.name;
        args = [...shell, b];
      }
    } else {
      args = [...shell, ins.rest];
    }

    for (const f of ins.flags.filter((x) => x.name === 'mount')) {
      const spec = expand(df, ins, () => parseMount(f.value ?? '', (w) => new ShellLex(df.escapeToken).processWord(w, s.env)));
      mounts.push(this.execMount(s, df, ins, spec, states, inputs));
    }

    let network: NetworkMode = 'default';
    const net = flagValue(ins, 'network');
    if (net !== undefined) {
      if (net === 'none' || net === 'host' || net === 'default') network = net;
      else if (net === 'sandbox') network = 'default';
      else throw err(`unsupported network mode: ${net}`);
    }
    if (this.opts.forceNetworkMode && net === undefined) network = this.opts.forceNetworkMode;
    const security = flagValue(ins, 'security');
    if (security !== undefined && security !== 'sandbox') {
      throw err(security === 'insecure' ? 'RUN --security=insecure is not supported by this builder' : `unsupported security mode ${security}`);
    }
    if (flagValue(ins, 'device') !== undefined) throw err('RUN --device is not supported by this builder');

    const env = [...s.env].map(([k, v]) => `${k}=${v}`);
    if (!s.env.has('PATH')) env.push(`PATH=${DEFAULT_PATH}`);
    const proxyEnv = Object.entries(this.buildArgs)
      .filter(([k]) => PROXY_ARGS.has(k) && !s.env.has(k))
      .map(([k, v]) => `${k}=${v}`);
    for (const [k] of Object.entries(this.buildArgs)) if (PROXY_ARGS.has(k)) this.usedBuildArgs.add(k);

    const uniqInputs = [...new Set(inputs)];
    const name = this.prefix(s, this.displayText(s, df, ins) + nameSuffix, onbuild);
    const op: Op = {
      kind: 'exec',
      rootfs: s.vertex!,
      args,
      env,
      cwd: cfg.WorkingDir || '/',
      user: cfg.User ?? '',
      network,
      mounts,
      ...(this.opts.hostname ? { hostname: this.opts.hostname } : {}),
      ...(proxyEnv.length ? { proxyEnv } : {}),
    };
    s.vertex = this.addVertex(op, uniqInputs, name, ins, s.ignoreCache);
    s.image.history.push({ created_by: 'RUN ' + args.join(' '), comment: 'buildkit.dockerfile.v0' });
  }

  private execMount(s: StageState, df: ParsedDockerfile, ins: Instruction, m: MountSpec, states: StageState[], inputs: VertexId[]): ExecMount {
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const wd = s.image.config.WorkingDir || '/';
    const abs = (p: string): string => (p.startsWith('/') ? posix.normalize(p) : posix.join(wd, p));
    switch (m.type) {
      case 'ssh':
        throw err('RUN --mount=type=ssh is not supported by this builder (no SSH agent forwarding)');
      case 'secret': {
        let id = m.id ?? m.source ?? '';
        const target = m.target ? abs(m.target) : m.env ? undefined : `/run/secrets/${posix.basename(id)}`;
        if (id === '' && m.target) id = posix.basename(m.target);
        const out: ExecMount = {
          type: 'secret',
          target: target ?? '',
          id,
          readonly: true,
          required: m.required ?? false,
          mode: m.mode ?? 0o400,
          uid: m.uid ?? 0,
          gid: m.gid ?? 0,
        };
        if (m.env) out.env = m.env;
        return out;
      }
      case 'tmpfs': {
        if (!m.target) throw err('mount destination is required for tmpfs mounts');
        const out: ExecMount = { type: 'tmpfs', target: abs(m.target), readonly: false };
        if (m.size !== undefined) out.size = m.size;
        return out;
      }
      case 'cache': {
        if (!m.target) throw err('mount destination is required for cache mounts');
        const target = abs(m.target);
        const out: ExecMount = {
          type: 'cache',
          target,
          id: m.id || target,
          readonly: m.readonly ?? false,
          sharing: m.sharing ?? 'shared',
          mode: m.mode ?? 0o755,
          uid: m.uid ?? 0,
          gid: m.gid ?? 0,
        };
        if (m.from !== undefined) {
          out.from = this.sourceVertex(s, df, ins, m.from, states);
          out.source = m.source ? posix.join('/', m.source) : '/';
          inputs.push(out.from);
        }
        return out;
      }
      case 'bind': {
        if (!m.target) throw err('mount destination is required for bind mounts');
        const from = this.sourceVertex(s, df, ins, m.from, states);
        inputs.push(from);
        return { type: 'bind', target: abs(m.target), source: posix.join('/', m.source ?? '/'), from, readonly: m.readonly ?? true };
      }
    }
  }

  private async dispatchCopy(s: StageState, df: ParsedDockerfile, ins: Instruction, onbuild: boolean, states: StageState[]): Promise<void> {
    const isAdd = ins.keyword === 'ADD';
    allowFlags(df, ins, isAdd ? ['chown', 'chmod', 'link', 'keep-git-dir', 'checksum', 'unpack', 'exclude'] : ['chown', 'from', 'chmod', 'link', 'exclude', 'parents']);
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const lx = new ShellLex(df.escapeToken);
    const word = (w: string): string => expand(df, ins, () => lx.processWord(w, s.env));
    const list = expand(df, ins, () => parseJsonArray(ins.rest)) ?? splitWhitespace(ins.rest);
    if (list.length < 2) {
      throw err(`${ins.keyword} requires at least two arguments, but only one was provided. Destination could not be determined`);
    }
    const rawDest = list[list.length - 1]!;
    if (parseHeredocWord(rawDest)) throw err(`${ins.keyword} cannot accept a heredoc as a destination`);
    const heredocs = new Map(ins.heredocs.map((h) => [h.name, h]));
    const sources: { path?: string; heredoc?: { name: string; data: string } }[] = [];
    for (const raw of list.slice(0, -1)) {
      const h = parseHeredocWord(raw);
      if (h && heredocs.has(h.name)) {
        const body = heredocs.get(h.name)!;
        let data = body.chomp ? chompTabs(body.content) : body.content;
        if (body.expand) data = expand(df, ins, () => lx.processWord(data, s.env, { skipProcessQuotes: true }));
        sources.push({ heredoc: { name: h.name, data } });
      } else {
        sources.push({ path: word(raw) });
      }
    }
    let dest = word(rawDest);
    const wd = s.image.config.WorkingDir || '/';
    if (!dest.startsWith('/')) {
      const trailing = dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
      dest = posix.join('/', wd, dest) + (trailing && !posix.join('/', wd, dest).endsWith('/') ? '/' : '');
    }
    if (sources.length > 1 && !dest.endsWith('/')) {
      throw err(`When using ${ins.keyword} with more than one source file, the destination must be a directory and end with a /`);
    }

    const chownRaw = flagValue(ins, 'chown');
    const chown = chownRaw ? parseChown(word(chownRaw)) : undefined;
    const chmodRaw = flagValue(ins, 'chmod');
    const chmod = chmodRaw ? word(chmodRaw) : undefined;
    if (chmod !== undefined) validateChmod(chmod, err);
    const link = boolFlag(df, ins, 'link') ?? false;
    const parents = boolFlag(df, ins, 'parents') ?? false;
    const excludes = ins.flags.filter((f) => f.name === 'exclude').map((f) => word(f.value ?? ''));
    const checksum = isAdd ? flagValue(ins, 'checksum') : undefined;
    const unpackFlag = isAdd ? boolFlag(df, ins, 'unpack') : undefined;
    const from = isAdd ? undefined : flagValue(ins, 'from');

    if (checksum) {
      if (sources.length !== 1) throw err("checksum can't be specified for multiple sources");
      if (!isHttpSource(sources[0]!.path ?? '')) throw err('checksum requires HTTP(S) or Git sources');
      if (!/^sha(256|384|512):[0-9a-f]+$/.test(word(checksum))) throw err(`invalid checksum digest format: ${checksum}`);
    }

    const base: Omit<CopyAction, 'from' | 'src'> = {
      action: 'copy',
      dest,
      ...(chown ? { chown } : {}),
      ...(chmod ? { chmod } : {}),
      link,
      parents,
      followSymlinks: true,
      excludes,
      unpack: false,
      dirContents: true,
      allowWildcard: true,
      allowEmptyWildcard: true,
      createDestPath: true,
    };
    const actions: CopyAction[] = [];
    const inputs: VertexId[] = [s.vertex!];
    for (const src of sources) {
      if (src.heredoc) {
        const file = this.addVertex(
          { kind: 'file', actions: [{ action: 'mkfile', path: '/' + src.heredoc.name, mode: 0o644, data: src.heredoc.data }] },
          [],
          'preparing inline document',
        );
        inputs.push(file);
        actions.push({ ...base, from: file, src: ['/' + src.heredoc.name] });
        continue;
      }
      const p = src.path!;
      if (isHttpSource(p)) {
        if (!isAdd) throw err("source can't be a URL for COPY");
        let filename = '__unnamed__';
        try {
          const b = posix.basename(new URL(p).pathname);
          if (b && b !== '/' && b !== '.') filename = b;
        } catch {
          throw err(`invalid URL ${p}`);
        }
        const http = this.addVertex(
          { kind: 'http', url: p, filename, ...(checksum ? { checksum: word(checksum) } : {}) },
          [],
          p,
          ins,
          s.ignoreCache && !checksum,
        );
        inputs.push(http);
        // Remote files are never unpacked unless asked to (Docker's ADD semantics).
        actions.push({ ...base, from: http, src: ['/' + filename], unpack: unpackFlag === true });
        continue;
      }
      if (isGitSource(p)) {
        if (!isAdd) throw err("source can't be a git ref for COPY");
        throw err('ADD of a git repository is not supported by this builder');
      }
      const fromVertex = this.sourceVertex(s, df, ins, from, states);
      inputs.push(fromVertex);
      actions.push({ ...base, from: fromVertex, src: [p], unpack: isAdd && unpackFlag !== false });
    }
    // Sources from one place go in one action, in order, as BuildKit's copy chain does.
    const merged: CopyAction[] = [];
    for (const a of actions) {
      const last = merged[merged.length - 1];
      if (last && last.from === a.from && last.unpack === a.unpack) {
        last.src.push(...a.src);
      } else {
        merged.push({ ...a, src: [...a.src] });
      }
    }
    const name = this.prefix(s, this.displayText(s, df, ins), onbuild);
    s.vertex = this.addVertex({ kind: 'file', base: s.vertex, actions: merged }, [...new Set(inputs)], name, ins, s.ignoreCache);
    const parts = [ins.keyword];
    if (parents) parts.push('--parents');
    if (chownRaw) parts.push(`--chown=${word(chownRaw)}`);
    if (chmod) parts.push(`--chmod=${chmod}`);
    parts.push(...sources.map((x) => x.path ?? x.heredoc!.name), dest);
    s.image.history.push({ created_by: parts.join(' ') + ' # buildkit', comment: 'buildkit.dockerfile.v0' });
  }
}

export function findStageIndex(stages: { name: string }[], ref: string): number {
  if (/^\d+$/.test(ref)) {
    const i = Number(ref);
    return i < stages.length ? i : -1;
  }
  const lower = ref.toLowerCase();
  return stages.findIndex((s) => s.name !== '' && s.name === lower);
}

function findStage(states: StageState[], ref: string): StageState | undefined {
  const i = findStageIndex(states.map((s) => s.def), ref);
  return i < 0 ? undefined : states[i];
}

export function resolveTarget(df: ParsedDockerfile, stages: StageDef[], target: string | undefined): number {
  if (!target) return stages.length - 1;
  const i = stages.findIndex((s) => s.name === target.toLowerCase());
  if (i < 0) throw new ObdkitError('EDOCKERFILE', `target stage "${target}" could not be found`, { file: df.file });
  return i;
}

function emptyImage(p: Platform): ImageConfig {
  const img: ImageConfig = { os: p.os, architecture: p.architecture, config: { Env: [`PATH=${DEFAULT_PATH}`] }, history: [] };
  if (p.variant) img.variant = p.variant;
  return img;
}

function imageFromResolved(r: ResolvedImage, p: Platform): ImageConfig {
  const c = r.config;
  const img: ImageConfig = {
    os: c.os ?? p.os,
    architecture: c.architecture ?? p.architecture,
    config: structuredClone(c.config ?? {}),
    history: (c.history ?? []).map((h) => ({ created_by: h.created_by ?? '', ...(h.comment ? { comment: h.comment } : {}), ...(h.empty_layer ? { empty_layer: true } : {}) })),
  };
  const variant = c.variant ?? p.variant;
  if (variant) img.variant = variant;
  if (c.author) img.author = c.author;
  if (!img.config.Env || !img.config.Env.some((e) => e.startsWith('PATH='))) {
    img.config.Env = [...(img.config.Env ?? []), `PATH=${DEFAULT_PATH}`];
  }
  return img;
}

function setEnv(list: string[], key: string, value: string): string[] {
  const entry = `${key}=${value}`;
  const i = list.findIndex((e) => e === key || e.startsWith(key + '='));
  // A redefined variable keeps its position, as Docker's config does.
  if (i < 0) return [...list, entry];
  const copy = [...list];
  copy[i] = entry;
  return copy;
}

function parseChown(s: string): ChownOpt {
  const i = s.indexOf(':');
  return i < 0 ? { user: s } : { user: s.slice(0, i), group: s.slice(i + 1) };
}

function validateChmod(chmod: string, err: (m: string) => ObdkitError): void {
  if (/^[0-7]+$/.test(chmod)) {
    if (parseInt(chmod, 8) > 0o7777) throw err(`invalid chmod parameter: '${chmod}'. it should be octal string and between 0 and 07777`);
    return;
  }
  if (/^\d+$/.test(chmod)) throw err(`invalid chmod parameter: '${chmod}'. it should be octal string and between 0 and 07777`);
  if (!/^([ugoa]*[-+=]([rwxXst]*|[ugo]))(,[ugoa]*[-+=]([rwxXst]*|[ugo]))*$/.test(chmod)) {
    throw err(`invalid chmod parameter: '${chmod}'`);
  }
}

function isHttpSource(p: string): boolean {
  return p.startsWith('http://') || p.startsWith('https://');
}

function isGitSource(p: string): boolean {
  return p.startsWith('git://') || p.startsWith('git@') || /^https?:\/\/.*\.git(#.*)?$/.test(p) || p.startsWith('ssh://');
}

function chompTabs(s: string): string {
  return s.replace(/^\t+/gm, '');
}

function summarizeHeredoc(doc: string): string {
  const lines = doc.trim().replace(/\r\n/g, '\n').split('\n');
  return lines[0]! + (lines.length > 1 ? '...' : '');
}

/** `80`, `80/udp`, `8000-8002/tcp` -> `80/tcp`, ... */
function parsePortSpec(spec: string): string[] {
  const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(spec);
  if (!m) throw new Error(`invalid containerPort: ${spec}`);
  const lo = Number(m[1]);
  const hi = m[2] ? Number(m[2]) : lo;
  const proto = (m[3] ?? 'tcp').toLowerCase();
  if (lo < 1 && hi < 1) throw new Error(`invalid containerPort: ${spec}`);
  if (hi < lo || hi > 65535) throw new Error(`invalid range specified for container port: ${spec}`);
  const out: string[] = [];
  for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  return out;
}

/** Keeps only what `target` needs: unused stages leave nothing behind. */
function pruneGraph(graph: BuildGraph, target: VertexId): BuildGraph {
  const out: BuildGraph = { vertices: {} };
  const stack = [target];
  while (stack.length) {
    const id = stack.pop()!;
    if (out.vertices[id]) continue;
    const v = graph.vertices[id]!;
    out.vertices[id] = v;
    stack.push(...v.inputs);
  }
  return out;
}

export type { Flag };
