// Where registry credentials come from: a caller-supplied async provider first (e.g. the BuildKit
// session's Auth service), then the Docker CLI config file (`$DOCKER_CONFIG/config.json` or
// `~/.docker/config.json`, `auths.<host>.auth` = base64 "user:pass"). auth.ts asks this module for
// credentials only when a registry challenges.
import { readFile } from 'node:fs/promises';
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

/** Reads `auths` from a Docker config file; a missing file means no credentials. */
export async function readDockerConfigAuths(path = dockerConfigPath()): Promise<Map<string, Credentials>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return new Map();
    throw new ObdkitError('ECREDENTIALS', `cannot read docker config: ${(err as Error).message}`, { file: path });
  }
  const p = new JsonPath(path);
  const root = asObject(parseJson(text, path), p);
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
  let auths: Promise<Map<string, Credentials>> | undefined;
  return async (host) => {
    auths ??= readDockerConfigAuths(path);
    const map = await auths;
    for (const k of candidateKeys(host)) {
      const c = map.get(k);
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
