// Instructions that only change the image config: ENV, LABEL, MAINTAINER, USER, EXPOSE, VOLUME,
// STOPSIGNAL, SHELL, CMD, ENTRYPOINT, HEALTHCHECK and ONBUILD. Each updates the stage's config, its build
// environment and its history; none adds a vertex. `convert.ts` handles the rest.
import type { HealthConfig, ImageConfig } from '../src/solver/ops.js';
import { ObdkitError } from '../src/util/errors.js';
import {
  allowFlags,
  dockerfileError,
  expand,
  flagValue,
  parseJsonArray,
  parseNameVal,
  splitWhitespace,
  type Instruction,
  type ParsedDockerfile,
} from './instructions.js';
import { ShellLex } from './shell-lex.js';
import { DEFAULT_SHELL, setEnv } from './image-config.js';
import { looksSecret, reportAt, type LintSink } from './lint-rules.js';
import { parseGoDuration } from './duration.js';

/** The parts of a stage these instructions touch. */
export interface ConfigState {
  image: ImageConfig;
  /** Build environment (image ENV plus ARG values), used for expansion and RUN. */
  env: Map<string, string>;
  /** CMD was set in this stage (so a later ENTRYPOINT keeps it). */
  cmdSet: boolean;
  /** ARG names declared in this stage so far: never reported as undefined variables. */
  declaredArgs: Set<string>;
  /** Last CMD / ENTRYPOINT / HEALTHCHECK of the stage, for the "used more than once" check. */
  usedOnce: Map<string, Instruction>;
}

/** Reports variables an instruction read but nobody defined (BuildKit's UndefinedVar check). */
export function reportUndefined(lint: LintSink | undefined, ins: Instruction, unmatched: Iterable<string>, declared: Set<string>): void {
  if (!lint) return;
  for (const name of unmatched) {
    if (!declared.has(name)) reportAt(lint, 'UndefinedVar', `Usage of undefined variable '$${name}'`, ins);
  }
}

export const CONFIG_INSTRUCTIONS = new Set([
  'ENV', 'LABEL', 'MAINTAINER', 'USER', 'EXPOSE', 'VOLUME', 'STOPSIGNAL', 'SHELL', 'CMD', 'ENTRYPOINT', 'HEALTHCHECK', 'ONBUILD',
]);

export function addHistory(image: ImageConfig, createdBy: string, emptyLayer: boolean): void {
  image.history.push(
    emptyLayer
      ? { created_by: createdBy, comment: 'buildkit.dockerfile.v0', empty_layer: true }
      : { created_by: createdBy, comment: 'buildkit.dockerfile.v0' },
  );
}

export function applyConfigInstruction(s: ConfigState, df: ParsedDockerfile, ins: Instruction, lint?: LintSink): void {
  const lex = new ShellLex(df.escapeToken);
  const unmatched = new Set<string>();
  const word = (w: string): string =>
    expand(df, ins, () => {
      const r = lex.process(w, s.env);
      for (const u of r.unmatched) unmatched.add(u);
      return r.result;
    });
  const undefinedVars = (): void => reportUndefined(lint, ins, unmatched, s.declaredArgs);
  const once = (): void => {
    const prev = s.usedOnce.get(ins.keyword);
    if (prev) reportAt(lint, 'MultipleInstructionsDisallowed', `Multiple ${ins.keyword} instructions should not be used in the same stage because only the last one will be used`, prev);
    s.usedOnce.set(ins.keyword, ins);
  };
  const cfg = s.image.config;
  const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
  const history = (createdBy: string, emptyLayer: boolean): void => addHistory(s.image, createdBy, emptyLayer);
  const noFlags = (): void => allowFlags(df, ins, []);

  switch (ins.keyword) {
    case 'ENV': {
      noFlags();
      const pairs = expand(df, ins, () => parseNameVal(ins.rest, df.escapeToken, 'ENV'));
      // Every pair is expanded against the environment before this instruction.
      const expanded = pairs.map((p) => ({ key: word(p.key), value: word(p.value) }));
      undefinedVars();
      for (const [i, p] of expanded.entries()) {
        if (pairs[i]!.legacy) reportAt(lint, 'LegacyKeyValueFormat', '"ENV key=value" should be used instead of legacy "ENV key value" format', ins);
        if (looksSecret(p.key)) reportAt(lint, 'SecretsUsedInArgOrEnv', `Do not use ARG or ENV instructions for sensitive data (ENV ${JSON.stringify(p.key)})`, ins);
        s.env.delete(p.key);
        s.env.set(p.key, p.value);
        cfg.Env = setEnv(cfg.Env ?? [], p.key, p.value);
      }
      history('ENV ' + expanded.map((p) => `${p.key}=${p.value}`).join(' '), true);
      return;
    }
    case 'LABEL': {
      noFlags();
      const pairs = expand(df, ins, () => parseNameVal(ins.rest, df.escapeToken, 'LABEL'));
      const expanded = pairs.map((p) => ({ key: word(p.key), value: word(p.value) }));
      undefinedVars();
      for (const p of pairs) {
        if (p.legacy) reportAt(lint, 'LegacyKeyValueFormat', '"LABEL key=value" should be used instead of legacy "LABEL key value" format', ins);
      }
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
      undefinedVars();
      history('USER ' + cfg.User, true);
      return;
    }
    case 'EXPOSE': {
      noFlags();
      const words = splitWhitespace(ins.rest);
      if (words.length === 0) throw err('EXPOSE requires at least one argument');
      cfg.ExposedPorts ??= {};
      const added: string[] = [];
      // BuildKit sorts the words first; warnings follow that order.
      for (const w of [...words].sort()) {
        const specs = expand(df, ins, () => {
          const r = lex.process(w, s.env);
          for (const u of r.unmatched) unmatched.add(u);
          return r.words;
        });
        for (const spec of specs) {
          if (spec.includes(':')) {
            reportAt(lint, 'ExposeInvalidFormat', `EXPOSE instruction should not define an IP address or host-port mapping, found '${spec}'`, ins);
          }
          const slash = spec.lastIndexOf('/');
          if (slash >= 0 && spec.slice(slash + 1) !== spec.slice(slash + 1).toLowerCase()) {
            reportAt(lint, 'ExposeProtoCasing', `Defined protocol '${spec}' in EXPOSE instruction should be lowercase`, ins);
          }
          for (const port of expand(df, ins, () => parsePortSpec(spec))) {
            cfg.ExposedPorts[port] = {};
            added.push(port);
          }
        }
      }
      undefinedVars();
      history('EXPOSE map[' + added.map((p) => `${p}:{}`).join(' ') + ']', true);
      return;
    }
    case 'VOLUME': {
      noFlags();
      const list = expand(df, ins, () => parseJsonArray(ins.rest)) ?? splitWhitespace(ins.rest);
      if (list.length === 0) throw err('VOLUME requires at least one argument');
      cfg.Volumes ??= {};
      const vols: string[] = [];
      for (const raw of list) {
        const v = word(raw.trim());
        if (v === '') throw err('VOLUME specified can not be an empty string');
        cfg.Volumes[v] = {};
        vols.push(v);
      }
      undefinedVars();
      history(`VOLUME [${vols.join(' ')}]`, true);
      return;
    }
    case 'STOPSIGNAL': {
      noFlags();
      if (splitWhitespace(ins.rest).length !== 1) throw err('STOPSIGNAL requires exactly one argument');
      const sig = word(ins.rest);
      undefinedVars();
      if (!validSignal(sig)) throw err(`invalid signal: ${sig}`);
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
      history(`SHELL [${list.join(' ')}]`, true);
      return;
    }
    case 'CMD':
    case 'ENTRYPOINT': {
      noFlags();
      const json = expand(df, ins, () => parseJsonArray(ins.rest));
      once();
      if (!json && !(cfg.Shell && cfg.Shell.length)) {
        reportAt(lint, 'JSONArgsRecommended', `JSON arguments recommended for ${ins.keyword} to prevent unintended behavior related to OS signals`, ins);
      }
      let args: string[];
      if (json) args = json;
      else args = ins.rest === '' && ins.keyword === 'ENTRYPOINT' ? [] : [...(cfg.Shell ?? DEFAULT_SHELL), ins.rest];
      if (ins.keyword === 'CMD') {
        cfg.Cmd = args;
        // Docker's image spec keeps this flag; BuildKit sets it for every CMD.
        cfg.ArgsEscaped = true;
        s.cmdSet = true;
      } else {
        cfg.Entrypoint = args.length ? args : undefined;
        // A new ENTRYPOINT drops a CMD that came from the base image.
        if (!s.cmdSet) delete cfg.Cmd;
      }
      history(`${ins.keyword} ${goQuoteList(args)}`, true);
      return;
    }
    case 'HEALTHCHECK': {
      cfg.Healthcheck = healthcheck(df, ins);
      once();
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
      // No history entry: BuildKit records ONBUILD only in the config.
      cfg.OnBuild = [...(cfg.OnBuild ?? []), trigger];
      return;
    }
    default:
      throw err(`${ins.keyword} is not an image config instruction`);
  }
}

function healthcheck(df: ParsedDockerfile, ins: Instruction): HealthConfig {
  const err = (msg: string): ObdkitError => dockerfileError(msg, df.file, ins.line);
  const m = /^(\S+)\s*([\s\S]*)$/.exec(ins.rest);
  if (!m) throw err('HEALTHCHECK requires at least one argument');
  const typ = m[1]!.toUpperCase();
  const cmd = m[2]!;
  if (typ === 'NONE') {
    if (cmd.trim() !== '') throw err('HEALTHCHECK NONE takes no arguments');
    if (ins.flags.length) throw err(`unknown flag: --${ins.flags[0]!.name}`);
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

/**
 * `80`, `80/udp`, `8000-8002/tcp` -> `80/tcp`, ...; an `ip:hostPort:` prefix is accepted and ignored (BuildKit
 * only warns about it). Error texts are those of Docker's port parser.
 */
function parsePortSpec(spec: string): string[] {
  const slash = spec.lastIndexOf('/');
  let port = slash < 0 ? spec : spec.slice(0, slash);
  const proto = slash < 0 ? 'tcp' : spec.slice(slash + 1).toLowerCase();
  if (!['tcp', 'udp', 'sctp'].includes(proto)) throw new Error(`invalid port: "${spec}": invalid proto: ${proto}`);
  const colon = port.lastIndexOf(':');
  if (colon >= 0) port = port.slice(colon + 1);
  const m = /^(\d+)(?:-(\d+))?$/.exec(port);
  if (!m) throw new Error(`invalid containerPort: ${port}`);
  const lo = Number(m[1]);
  const hi = m[2] ? Number(m[2]) : lo;
  if (lo > 65535 || hi > 65535 || hi < lo) throw new Error(`invalid containerPort: ${port}`);
  const out: string[] = [];
  for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  return out;
}

/** Linux signal names Docker accepts in STOPSIGNAL (with or without `SIG`), besides numbers. */
const SIGNALS = new Set([
  'ABRT', 'ALRM', 'BUS', 'CHLD', 'CLD', 'CONT', 'FPE', 'HUP', 'ILL', 'INT', 'IO', 'IOT', 'KILL', 'PIPE', 'POLL', 'PROF',
  'PWR', 'QUIT', 'SEGV', 'STKFLT', 'STOP', 'SYS', 'TERM', 'TRAP', 'TSTP', 'TTIN', 'TTOU', 'UNUSED', 'URG', 'USR1', 'USR2',
  'VTALRM', 'WINCH', 'XCPU', 'XFSZ',
]);

function validSignal(sig: string): boolean {
  if (/^\d+$/.test(sig)) return Number(sig) > 0;
  const name = sig.toUpperCase().replace(/^SIG/, '');
  if (SIGNALS.has(name)) return true;
  // Real-time signals: RTMIN, RTMIN+3, RTMAX-2.
  return /^RT(MIN|MAX)([+-]\d+)?$/.test(name);
}

/** Go's `%q` of a string slice (`["a" "b c"]`), the form BuildKit writes into history entries. */
function goQuoteList(list: string[]): string {
  return `[${list.map((x) => JSON.stringify(x)).join(' ')}]`;
}
