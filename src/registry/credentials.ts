// Where registry credentials come from: a caller-supplied async provider first (e.g. the BuildKit
// session's Auth service), then the Docker CLI config file (`$DOCKER_CONFIG/config.json` or
// `~/.docker/config.json`): a credential helper named by `credHelpers.<host>` or `credsStore`
// (`docker-credential-NAME get`, host on stdin), else `auths.<host>.auth` = base64 "user:pass".
// auth.ts asks this module for credentials only when a registry challenges.
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { log } from '../util/log.js';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { asObject, asString, JsonPath, optional, parseJson } from '../oci/validate.js';
import { DOCKER_HUB, DOCKER_HUB_API_HOST } from './reference.js';

export interface Credentials {
  username: string;
  password: string;
}

/** Looks up credentials for a registry host (host[:port] as written in references). */
export type CredentialProvider = (host: string) => Promise<Credentials | undefined> | Credentials | undefined;

/** Keys Docker writes for Docker Hub: the legacy index URL comes first. */
const hubKeys = ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io'];

function candidateKeys(host: string): string[] {
  if (host === DOCKER_HUB || host === DOCKER_HUB_API_HOST || host === 'index.docker.io') return hubKeys;
  return [host, `https://${host}`, `http://${host}`, `https://${host}/v1/`, `https://${host}/v2/`];
}

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
}

export interface DockerConfigCredentials {
  auths: Map<string, Credentials>;
  /** Per-host credential helper names (`credHelpers`). */
  helpers: Map<string, string>;
  /** Default credential helper (`credsStore`). */
  store?: string;
}

/** Reads `auths`, `credHelpers` and `credsStore` from a Docker config file; a missing file means none. */
export async function readDockerConfig(path = dockerConfigPath()): Promise<DockerConfigCredentials> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { auths: new Map(), helpers: new Map() };
    throw new ObdkitError('ECREDENTIALS', `cannot read docker config: ${(err as Error).message}`, { file: path });
  }
  const p = new JsonPath(path);
  const root = asObject(parseJson(text, path), p);
  const out: DockerConfigCredentials = { auths: readAuths(root, p), helpers: new Map() };
  const helpers = optional(root.credHelpers, p.at('credHelpers'), asObject) ?? {};
  for (const [host, name] of Object.entries(helpers)) out.helpers.set(host, asString(name, p.at('credHelpers').at(host)));
  const store = optional(root.credsStore, p.at('credsStore'), asString);
  if (store) out.store = store;
  return out;
}

/** Asks `docker-credential-NAME get` for a host's credentials (the helper protocol: host on stdin, JSON out). */
export async function runCredentialHelper(name: string, serverUrl: string): Promise<Credentials | undefined> {
  const bin = `docker-credential-${name}`;
  const r = await execa(bin, ['get'], { input: serverUrl, reject: false, timeout: 30_000 });
  if (r.failed) {
    if (/ENOENT/.test(r.message ?? '')) {
      log.warn({ helper: bin }, 'credential helper named in the docker config is not installed; ignoring it');
      return undefined;
    }
    // The protocol's way of saying "no credentials for this host".
    if (/credentials not found/i.test(`${r.stdout}${r.stderr}`)) return undefined;
    throw new ObdkitError('ECREDENTIALS', `credential helper ${bin} failed for ${serverUrl}: ${r.stderr || r.stdout || r.shortMessage}`, { host: serverUrl });
  }
  const p = new JsonPath(`${bin} output`);
  const o = asObject(parseJson(r.stdout, p.source), p);
  const username = asString(o.Username, p.at('Username'));
  const password = asString(o.Secret, p.at('Secret'));
  // Identity tokens (username "<token>") are OAuth refresh tokens, which this client does not use.
  if (username === '<token>') return undefined;
  return { username, password };
}

/** Reads only `auths` from a Docker config file (kept for callers that want the static entries). */
export async function readDockerConfigAuths(path = dockerConfigPath()): Promise<Map<string, Credentials>> {
  return (await readDockerConfig(path)).auths;
}

function readAuths(root: Record<string, unknown>, p: JsonPath): Map<string, Credentials> {
  const out = new Map<string, Credentials>();
  const auths = optional(root.auths, p.at('auths'), asObject) ?? {};
  for (const [key, entryRaw] of Object.entries(auths)) {
    const ep = p.at('auths').at(key);
    const entry = asObject(entryRaw, ep);
    const auth = optional(entry.auth, ep.at('auth'), asString);
    if (auth) {
      const decoded = Buffer.from(auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) ep.at('auth').fail('base64 "auth" does not decode to "username:password"');
      out.set(key, { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) });
      continue;
    }
    const username = optional(entry.username, ep.at('username'), asString);
    const password = optional(entry.password, ep.at('password'), asString);
    if (username !== undefined && password !== undefined) out.set(key, { username, password });
  }
  return out;
}

/** A provider backed by the Docker config file, read once on first use. */
export function dockerConfigProvider(path?: string): CredentialProvider {
  let config: Promise<DockerConfigCredentials> | undefined;
  return async (host) => {
    config ??= readDockerConfig(path);
    const cfg = await config;
    const keys = candidateKeys(host);
    const helper = keys.map((k) => cfg.helpers.get(k)).find((h) => h !== undefined) ?? cfg.store;
    if (helper) {
      const fromHelper = await runCredentialHelper(helper, keys[0]!);
      if (fromHelper) return fromHelper;
    }
    for (const k of keys) {
      const c = cfg.auths.get(k);
      if (c) return c;
    }
    return undefined;
  };
}

/** Tries each provider in order; the first answer wins. */
export function chainProviders(...providers: (CredentialProvider | undefined)[]): CredentialProvider {
  return async (host) => {
    for (const p of providers) {
      if (!p) continue;
      const c = await p(host);
      if (c) return c;
    }
    return undefined;
  };
}
