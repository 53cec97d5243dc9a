// A build whose inputs are files on this machine (`obdkit build`): the context directory, the
// Dockerfile, its `.dockerignore`, build args and secret files, read and checked into a BuildRequest
// (run-build.ts) plus what the local hooks need (LocalDirContexts and FileSecrets of
// worker/build/providers.ts). The server gets the same pieces through the build client's session and
// follows the same rules: `<Dockerfile>.dockerignore` beside the Dockerfile wins over the context's
// `.dockerignore`.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseDockerignore, parsePlatform } from '../../frontend/index.js';
import { ObdkitError } from '../util/errors.js';
import { parseKeyValues } from './outputs.js';
import type { BuildRequest } from './run-build.js';

/** Progress modes `--progress` accepts: `tty` redraws running steps, `plain` prints numbered lines, `auto` picks by terminal. */
export const PROGRESS_MODES = ['plain', 'tty', 'auto'] as const;

export function checkProgressMode(mode: string): void {
  if (!(PROGRESS_MODES as readonly string[]).includes(mode)) {
    throw new ObdkitError('EUSAGE', `--progress must be plain, tty or auto, got ${JSON.stringify(mode)}`);
  }
}

export interface LocalBuildOptions {
  /** The Dockerfile, relative to the context directory (default `Dockerfile`). */
  file?: string;
  target?: string;
  /** `K=V`, or a bare `K` whose value comes from this process's environment (left out when unset). */
  buildArgs?: readonly string[];
  /** `id=ID,src=FILE` (or `source=FILE`). */
  secrets?: readonly string[];
  noCache?: boolean;
  /** `os/arch[/variant]`; default: this machine's. */
  platform?: string;
}

export interface LocalBuild {
  request: BuildRequest;
  /** The build context, absolute; served to the build as context `request.contextName`. */
  contextDir: string;
  /** Secret id → absolute file path. */
  secretFiles: Record<string, string>;
}

/** Reads and checks everything a local build names; what cannot be used is an EUSAGE error. */
export function readLocalBuild(contextDir: string, o: LocalBuildOptions): LocalBuild {
  const context = resolve(contextDir);
  if (!existsSync(context) || !statSync(context).isDirectory()) throw new ObdkitError('EUSAGE', 'build context is not a directory', { file: context });
  const dockerfilePath = resolve(context, o.file ?? 'Dockerfile');
  let dockerfile: string;
  try {
    dockerfile = readFileSync(dockerfilePath, 'utf8');
  } catch (err) {
    throw new ObdkitError('EUSAGE', `cannot read Dockerfile: ${(err as Error).message}`, { file: dockerfilePath });
  }
  const request: BuildRequest = {
    dockerfile,
    filename: basename(dockerfilePath),
    ...(o.target ? { target: o.target } : {}),
    buildArgs: buildArgs(o.buildArgs ?? []),
    ...(o.platform ? { platform: platformOf(o.platform) } : {}),
    noCache: o.noCache ?? false,
    excludes: dockerignore(dockerfilePath, context),
    contextName: 'context',
  };
  return { request, contextDir: context, secretFiles: secretFiles(o.secrets ?? []) };
}

function buildArgs(specs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of specs) {
    const i = a.indexOf('=');
    const v = i >= 0 ? a.slice(i + 1) : process.env[a];
    if (v !== undefined) out[i >= 0 ? a.slice(0, i) : a] = v;
  }
  return out;
}

function secretFiles(specs: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of specs) {
    const kv = parseKeyValues(s);
    const id = kv['id'];
    const src = kv['src'] ?? kv['source'];
    if (!id || !src) throw new ObdkitError('EUSAGE', `--secret needs id=ID,src=FILE, got ${JSON.stringify(s)}`);
    out[id] = resolve(src);
  }
  return out;
}

function dockerignore(dockerfilePath: string, context: string): string[] {
  for (const f of [`${dockerfilePath}.dockerignore`, join(context, '.dockerignore')]) {
    if (existsSync(f)) return parseDockerignore(readFileSync(f, 'utf8'));
  }
  return [];
}

function platformOf(spec: string): NonNullable<BuildRequest['platform']> {
  try {
    return parsePlatform(spec);
  } catch (err) {
    throw new ObdkitError('EUSAGE', (err as Error).message, { field: 'platform' });
  }
}
