// Dockerfile -> build graph. A pure translation in the manner of BuildKit's dockerfile2llb: each stage
// starts from an image, `scratch` or an earlier stage; RUN becomes an exec op, COPY/ADD/WORKDIR file ops,
// everything else only changes the stage's image config. Only stages the target needs are translated
// (and only their base images resolved). Base image configs come from the injected `resolveImageConfig`,
// so this module does no I/O. Expansion follows BuildKit: ENV, ARG defaults, LABEL, WORKDIR, USER, EXPOSE,
// VOLUME, STOPSIGNAL, COPY/ADD paths and flags and RUN --mount values expand; RUN, CMD, ENTRYPOINT, SHELL,
// HEALTHCHECK and ONBUILD do not (the shell in the container does that at run time).
// Neighbours: `instructions.ts` parses lines, `stages.ts` splits stages and global ARGs,
// `config-instructions.ts` applies metadata-only instructions, `image-config.ts` builds start configs.
import { posix } from 'node:path';
import {
  vertexId,
  type BuildGraph,
  type ChownOpt,
  type CopyAction,
  type ExecMount,
  type FileAction,
  type ImageConfig,
  type NetworkMode,
  type Op,
  type Platform,
  type Vertex,
  type VertexId,
} from '../src/solver/ops.js';
import { ObdkitError } from '../src/util/errors.js';
import {
  allowFlags,
  boolFlag,
  dockerfileError,
  expand,
  flagValue,
  parseDockerfile,
  parseHeredocWord,
  parseJsonArray,
  splitWhitespace,
  type Instruction,
  type ParsedDockerfile,
} from './instructions.js';
import { ShellLex, envMap } from './shell-lex.js';
import { formatPlatform, hostPlatform, parsePlatform, platformArgs } from './platform.js';
import { normalizeImageRef, parseImageRef } from './reference.js';
import { parseMount, type MountSpec } from './run-mount.js';
import { argPairs, evalMetaArgs, findStageIndex, resolveTarget, splitStages, type StageDef } from './stages.js';
import { DEFAULT_PATH, DEFAULT_SHELL, emptyImage, imageFromResolved, type ResolvedImage } from './image-config.js';
import { addHistory, applyConfigInstruction, CONFIG_INSTRUCTIONS, reportUndefined } from './config-instructions.js';
import { looksSecret, reportAt, type LintSink } from './lint-rules.js';

export type { ResolvedImage } from './image-config.js';
export { DEFAULT_PATH } from './image-config.js';
export type ResolveImageConfig = (ref: string, platform: Platform) => Promise<ResolvedImage>;

const PROXY_ARGS = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);

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
  /** Receives check-rule findings while translating (the lint subrequest). */
  lint?: LintSink;
  /** Translate every stage, not only those the target needs (the lint subrequest). */
  allStages?: boolean;
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
  /** The `# syntax=` directive, if any: the caller decides whether it may build natively. */
  syntax?: string;
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
  declaredArgs: Set<string>;
  usedOnce: Map<string, Instruction>;
  /** An absolute WORKDIR was set in this build (checks of relative ones). */
  workdirSet: boolean;
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
  private readonly resolved = new Map<string, Promise<ResolvedImage>>();

  constructor(private readonly opts: ConvertOptions) {
    this.df = parseDockerfile(opts.dockerfile, opts.filename ?? 'Dockerfile');
    this.buildArgs = opts.buildArgs ?? {};
    this.buildPlatform = opts.buildPlatform ?? hostPlatform();
    this.targetPlatform = opts.targetPlatform ?? this.buildPlatform;
  }

  async run(): Promise<ConvertResult> {
    const df = this.df;
    const { metaArgs, stages, warnings } = splitStages(df);
    this.warnings.push(...warnings);
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
        declaredArgs: new Set<string>(),
        usedOnce: new Map<string, Instruction>(),
        workdirSet: false,
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
      // ONBUILD triggers fire in the stage built on top: from a base image's config, or from the ONBUILD
      // instructions of a base stage (which never put them in a config of their own).
      const triggers = s.baseStage
        ? s.baseStage.def.commands.filter((c) => c.keyword === 'ONBUILD').map((c) => c.original.replace(/^\s*ONBUILD\s*/i, ''))
        : (s.baseImage?.config.config?.OnBuild ?? []);
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
    if (this.opts.allStages) {
      for (const s of states) await visit(s);
    } else {
      await visit(states[targetIdx]!);
    }

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
      ...(df.syntax ? { syntax: df.syntax } : {}),
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
    s.baseImage = await this.resolveRef(ref, s.platform, this.df, s.def.from);
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

  /**
   * The step's display text: the instruction as written with variables expanded and the keyword upper-cased.
   * As in BuildKit, RUN keeps its quotes and unknown variables (the shell will see them); COPY, ADD and
   * WORKDIR show the fully expanded words.
   */
  private displayText(s: StageState, df: ParsedDockerfile, ins: Instruction): string {
    let text = ins.original;
    const run = ins.keyword === 'RUN';
    try {
      text = new ShellLex(df.escapeToken).processWord(text, s.env, run ? { rawQuotes: true, skipUnsetEnv: true } : {});
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
      // The base stage's ARG values stay in the build environment, as in BuildKit.
      s.env = new Map(b.env);
      s.declaredArgs = new Set(b.declaredArgs);
      s.workdirSet = b.workdirSet;
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
    // Triggers have been queued as commands; the new image does not inherit them.
    delete s.image.config.OnBuild;

    for (const c of s.commands) {
      await this.dispatch(s, c.df, c.ins, c.onbuild, states);
    }
    s.dispatched = true;
  }

  private async dispatch(s: StageState, df: ParsedDockerfile, ins: Instruction, onbuild: boolean, states: StageState[]): Promise<void> {
    const lex = new ShellLex(df.escapeToken);
    const unmatched = new Set<string>();
    const word = (w: string): string =>
      expand(df, ins, () => {
        const r = lex.process(w, s.env);
        for (const u of r.unmatched) unmatched.add(u);
        return r.result;
      });
    const lint = this.opts.lint;
    const cfg = s.image.config;
    const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
    const history = (createdBy: string, emptyLayer: boolean): void => addHistory(s.image, createdBy, emptyLayer);
    const noFlags = (): void => allowFlags(df, ins, []);

    switch (ins.keyword) {
      case 'ARG': {
        noFlags();
        const parts: string[] = [];
        for (const p of argPairs(df, ins)) {
          this.usedBuildArgs.add(p.key);
          if (looksSecret(p.key)) reportAt(lint, 'SecretsUsedInArgOrEnv', `Do not use ARG or ENV instructions for sensitive data (ARG ${JSON.stringify(p.key)})`, ins);
          let value: string | undefined;
          if (p.key in this.buildArgs) value = this.buildArgs[p.key];
          else if (p.value !== undefined) {
            unmatched.clear();
            value = word(p.value);
            reportUndefined(lint, ins, unmatched, s.declaredArgs);
          } else if (this.globalScope.has(p.key)) value = this.globalScope.get(p.key);
          s.declaredArgs.add(p.key);
          if (value !== undefined) {
            s.env.delete(p.key);
            s.env.set(p.key, value);
          }
          parts.push(value === undefined ? p.key : `${p.key}=${value}`);
        }
        history('ARG ' + parts.join(' '), true);
        return;
      }
      case 'WORKDIR': {
        noFlags();
        if (ins.rest === '') throw err('WORKDIR requires exactly one argument');
        const p = word(ins.rest);
        reportUndefined(lint, ins, unmatched, s.declaredArgs);
        if (!s.workdirSet && !p.startsWith('/')) {
          reportAt(lint, 'WorkdirRelativePath', `Relative workdir ${JSON.stringify(p)} can have unexpected results if the base image changes`, ins);
        }
        s.workdirSet = true;
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
      case 'RUN':
        return this.dispatchRun(s, df, ins, onbuild, states);
      case 'COPY':
      case 'ADD':
        return this.dispatchCopy(s, df, ins, onbuild, states);
      case 'FROM':
        throw err('FROM is not allowed here');
      default:
        if (!CONFIG_INSTRUCTIONS.has(ins.keyword)) throw err(`unknown instruction: ${ins.keyword}`);
        applyConfigInstruction(s, df, ins, this.opts.lint);
    }
  }

  /** Where another stage, an image or the context is read from in COPY --from / RUN --mount from=. */
  private async sourceVertex(s: StageState, df: ParsedDockerfile, ins: Instruction, from: string | undefined, states: StageState[]): Promise<VertexId> {
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
    const resolved = await this.resolveRef(ref, s.platform, df, ins);
    if (resolved.digest && !parseImageRef(ref).digest) ref = `${ref}@${resolved.digest}`;
    return this.addVertex({ kind: 'image', ref, platform: s.platform }, [], `FROM ${ref}`, ins, s.ignoreCache);
  }

  /** One lookup per reference and platform, however often a Dockerfile names it. */
  private resolveRef(ref: string, platform: Platform, df: ParsedDockerfile, ins: Instruction): Promise<ResolvedImage> {
    const resolve = this.opts.resolveImageConfig;
    if (!resolve) return Promise.resolve({ config: {} });
    const k = `${ref} ${formatPlatform(platform)}`;
    let p = this.resolved.get(k);
    if (!p) {
      p = resolve(ref, platform).catch((err: unknown) => {
        throw new ObdkitError('ERESOLVE', `failed to resolve source metadata for ${ref}: ${(err as Error).message}`, {
          file: df.file,
          line: ins.line,
          ref,
        }, { cause: err });
      });
      this.resolved.set(k, p);
    }
    return p;
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
            '[internal] preparing inline document',
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

    const lex = new ShellLex(df.escapeToken);
    const unmatched = new Set<string>();
    const specs = ins.flags
      .filter((x) => x.name === 'mount')
      .map((f) =>
        expand(df, ins, () =>
          parseMount(f.value ?? '', (w) => {
            const r = lex.process(w, s.env);
            for (const u of r.unmatched) unmatched.add(u);
            return r.result;
          }),
        ),
      );
    reportUndefined(this.opts.lint, ins, unmatched, s.declaredArgs);
    for (const spec of specs) mounts.push(await this.execMount(s, df, ins, spec, states, inputs));

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

  private async execMount(s: StageState, df: ParsedDockerfile, ins: Instruction, m: MountSpec, states: StageState[], inputs: VertexId[]): Promise<ExecMount> {
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
        if (id === '' && m.env) id = m.env;
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
          out.from = await this.sourceVertex(s, df, ins, m.from, states);
          out.source = m.source ? posix.join('/', m.source) : '/';
          inputs.push(out.from);
        }
        return out;
      }
      case 'bind': {
        if (!m.target) throw err('mount destination is required for bind mounts');
        const from = await this.sourceVertex(s, df, ins, m.from, states);
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
    const unmatched = new Set<string>();
    const word = (w: string): string =>
      expand(df, ins, () => {
        const r = lx.process(w, s.env);
        for (const u of r.unmatched) unmatched.add(u);
        return r.result;
      });
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
      // Relative to WORKDIR; `.` and a trailing slash both mean "into this directory".
      const joined = posix.join('/', wd, dest);
      const intoDir = dest.endsWith('/') || dest === '.' || dest.endsWith('/.');
      dest = intoDir && !joined.endsWith('/') ? joined + '/' : joined;
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
    const checksumValue = checksum ? word(checksum) : undefined;
    reportUndefined(this.opts.lint, ins, unmatched, s.declaredArgs);

    if (checksum) {
      if (sources.length !== 1) throw err("checksum can't be specified for multiple sources");
      if (!isHttpSource(sources[0]!.path ?? '')) throw err('checksum requires HTTP(S) or Git sources');
      if (!/^sha(256|384|512):[0-9a-f]+$/.test(checksumValue!)) throw err(`invalid checksum digest format: ${checksum}`);
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
          '[internal] preparing inline document',
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
          { kind: 'http', url: p, filename, ...(checksumValue ? { checksum: checksumValue } : {}) },
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
      const fromVertex = await this.sourceVertex(s, df, ins, from, states);
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
    // The history line BuildKit writes: sources and destination as written (after expansion).
    const parts = [ins.keyword];
    if (parents) parts.push('--parents');
    if (chownRaw) parts.push(`--chown=${word(chownRaw)}`);
    if (chmod) parts.push(`--chmod=${chmod}`);
    parts.push(...sources.map((x) => x.path ?? `<<${x.heredoc!.name}`), word(rawDest));
    s.image.history.push({ created_by: parts.join(' ') + ' # buildkit', comment: 'buildkit.dockerfile.v0' });
  }
}

function findStage(states: StageState[], ref: string): StageState | undefined {
  const i = findStageIndex(states.map((s) => s.def), ref);
  return i < 0 ? undefined : states[i];
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

