// Test helper: a real CNCF distribution registry (`docker-registry`, or $OBDKIT_REGISTRY_BIN) on a
// free loopback port, with its own config and storage in a temp dir. Options add htpasswd Basic
// auth (bcrypt via `htpasswd -B`) or token auth, served by a small in-process token server that
// signs RS256 JWTs with a self-signed certificate made by the `openssl` CLI. `stop()` kills the
// registry, closes the token server and removes the temp dir.
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';

export interface TokenGrant {
  type: string;
  name: string;
  actions: string[];
}

export interface StartRegistryOptions {
  /** 'basic' = htpasswd, 'token' = bearer tokens from an in-process token server. */
  auth?: 'none' | 'basic' | 'token';
  /** Accounts for basic/token auth (default: { obdkit: 'secret' }). */
  users?: Record<string, string>;
  /**
   * Token auth: which of the requested actions a user gets on a repository
   * (default: everything for a known user, nothing for anonymous).
   */
  policy?: (user: string | undefined, repository: string, actions: string[]) => string[];
  /** Token lifetime in seconds (default 300). */
  tokenTtlSeconds?: number;
  /** Token auth: the first N tokens are issued already expired (to exercise refresh after a 401). */
  expiredTokens?: number;
  /** Serve https with a self-signed certificate for 127.0.0.1 (PEM in `RunningRegistry.caCert`). */
  tls?: boolean;
}

export interface RunningRegistry {
  /** `127.0.0.1:PORT`, usable in image references. */
  host: string;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  port: number;
  dir: string;
  users: Record<string, string>;
  /** Token auth only: how many tokens were issued so far. */
  tokensIssued: () => number;
  /** The registry's self-signed certificate (PEM) when started with `tls`. */
  caCert?: string;
  /** A bearer token with the given grants (for checking the registry directly in tests). */
  adminToken?: (grants: TokenGrant[]) => string;
  stop(): Promise<void>;
}

const SERVICE = 'obdkit-test-registry';
const ISSUER = 'obdkit-test-issuer';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function registryBinary(): string {
  return process.env.OBDKIT_REGISTRY_BIN ?? 'docker-registry';
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

function makeJwt(key: KeyObject, certDer: Buffer, sub: string, access: TokenGrant[], ttl: number, expired = false): string {
  const now = Math.floor(Date.now() / 1000) - (expired ? 3600 : 0);
  const head = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] };
  const claims = { iss: ISSUER, sub, aud: SERVICE, exp: now + ttl, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
  const input = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('RSA-SHA256', Buffer.from(input), key))}`;
}

async function startTokenServer(
  dir: string,
  users: Record<string, string>,
  opts: StartRegistryOptions,
): Promise<{ server: Server; realm: string; certPath: string; issued: () => number; adminToken: (g: TokenGrant[]) => string }> {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.crt');
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=obdkit-test-token']);
  const key = createPrivateKey(readFileSync(keyPath));
  const certDer = new X509Certificate(readFileSync(certPath)).raw;
  const ttl = opts.tokenTtlSeconds ?? 300;
  let issued = 0;
  const policy = opts.policy ?? ((user: string | undefined, _repo: string, actions: string[]) => (user ? actions : []));
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    let user: string | undefined;
    const authz = req.headers.authorization;
    if (authz?.startsWith('Basic ')) {
      const [name, ...rest] = Buffer.from(authz.slice(6), 'base64').toString().split(':');
      if (name === undefined || users[name] !== rest.join(':')) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
        return;
      }
      user = name;
    }
    const access: TokenGrant[] = [];
    for (const scope of u.searchParams.getAll('scope')) {
      const parts = scope.split(':');
      if (parts.length < 3) continue;
      const actions = parts.pop()!.split(',');
      const type = parts.shift()!;
      const name = parts.join(':');
      const granted = type === 'repository' ? policy(user, name, actions) : [];
      if (granted.length) access.push({ type, name, actions: granted });
    }
    issued++;
    const token = makeJwt(key, certDer, user ?? '', access, ttl, issued <= (opts.expiredTokens ?? 0));
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: ttl, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    realm: `http://127.0.0.1:${port}/token`,
    certPath,
    issued: () => issued,
    adminToken: (grants) => makeJwt(key, certDer, 'admin', grants, ttl),
  };
}

/** GET a URL (trusting `ca` for https) and return the status. */
function probe(url: string, ca?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest(url, { ca }) : httpRequest(url)).on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RunningRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'obdkit-registry-'));
  const users = opts.users ?? { obdkit: 'secret' };
  const auth = opts.auth ?? 'none';
  let child: ChildProcess | undefined;
  let token: Awaited<ReturnType<typeof startTokenServer>> | undefined;
  const cleanup = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    if (token) await new Promise<void>((resolve) => token!.server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    let authYaml = '';
    if (auth === 'basic') {
      const lines: string[] = [];
      for (const [u, p] of Object.entries(users)) lines.push((await execa('htpasswd', ['-Bbn', u, p])).stdout.trim());
      await writeFile(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
      authYaml = `auth:\n  htpasswd:\n    realm: obdkit-test\n    path: ${join(dir, 'htpasswd')}\n`;
    } else if (auth === 'token') {
      token = await startTokenServer(dir, users, opts);
      authYaml = `auth:\n  token:\n    realm: ${token.realm}\n    service: ${SERVICE}\n    issuer: ${ISSUER}\n    rootcertbundle: ${token.certPath}\n`;
    }
    let tlsYaml = '';
    let caCert: string | undefined;
    if (opts.tls) {
      const key = join(dir, 'tls.key');
      const crt = join(dir, 'tls.crt');
      await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', crt, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
      caCert = await readFile(crt, 'utf8');
      tlsYaml = `  tls:\n    certificate: ${crt}\n    key: ${key}\n`;
    }
    const config = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  cache:',
      '    blobdescriptor: inmemory',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(16).toString('hex')}`,
      tlsYaml,
      authYaml,
    ].join('\n');
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, config);
    const logPath = join(dir, 'registry.log');
    const logFd = openSync(logPath, 'w');
    try {
      child = spawn(registryBinary(), ['serve', configPath], { stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const spawnError = new Promise<never>((_, reject) => child!.once('error', reject));
    spawnError.catch(() => undefined);
    const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`registry exited with ${child.exitCode}: ${await readFile(logPath, 'utf8')}`);
      const ok = await Promise.race([
        probe(`${url}/v2/`, caCert).then(
          (status) => status === 200 || status === 401,
          () => false,
        ),
        spawnError,
      ]);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`registry did not answer on ${url}: ${await readFile(logPath, 'utf8')}`);
      await sleep(100);
    }
    const running: RunningRegistry = {
      host: `127.0.0.1:${port}`,
      url,
      port,
      dir,
      users,
      tokensIssued: () => token?.issued() ?? 0,
      stop: cleanup,
    };
    if (token) running.adminToken = token.adminToken;
    if (caCert) running.caCert = caCert;
    return running;
  } catch (err) {
    await cleanup();
    throw err;
  }
}
