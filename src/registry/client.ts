// The HTTP core of the registry client: one RegistryClient per process (or per build) holds the
// per-host settings (plain http for "insecure" and loopback hosts, extra CA, skip-verify), one undici
// Agent per host, the Authenticator, and `send()`, which adds auth, retries transient failures with
// backoff, follows redirects (keeping Range, dropping Authorization across hosts) and maps failures
// to ObdkitErrors. pull.ts, upload.ts, push.ts, copy.ts and remote-blob.ts build on `send()`.
import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { log } from '../util/log.js';
import { Authenticator, scopeFor } from './auth.js';
import { chainProviders, dockerConfigProvider, type CredentialProvider } from './credentials.js';
import { registryHttpError, registryNetworkError } from './errors.js';
import { formatReference, isLoopbackHost, type ImageReference } from './reference.js';
import { backoff, defaultRetryPolicy, isTransientNetworkError, isTransientStatus, type RetryPolicy } from './retry.js';

export interface RegistryHostOptions {
  /** Speak plain http (Docker's "insecure registry"). Loopback hosts default to true. */
  insecure?: boolean;
  /** Extra CA certificate(s), PEM. */
  ca?: string | Buffer;
  /** Accept any TLS certificate. */
  skipTlsVerify?: boolean;
}

export interface RegistryClientOptions {
  /** Settings per registry host[:port]. */
  hosts?: Record<string, RegistryHostOptions>;
  /** Asked first for credentials; the Docker config file is asked next unless dockerConfig is false. */
  credentials?: CredentialProvider;
  /** Path of a Docker config.json, or false to ignore it. Default: $DOCKER_CONFIG or ~/.docker. */
  dockerConfig?: string | false;
  retry?: Partial<RetryPolicy>;
  userAgent?: string;
}

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface SendRequest {
  ref: ImageReference;
  method: HttpMethod;
  /** Path under the registry base URL (`/v2/...`) or an absolute URL (an upload Location). */
  target: string;
  headers?: Record<string, string>;
  /** Called once per attempt, so a retry sends a fresh stream. */
  body?: () => Buffer | Readable | string;
  /** Token scope actions on ref.repository. */
  actions: readonly ('pull' | 'push' | 'delete')[];
  /** Further scopes, e.g. `repository:OTHER:pull` for a cross-repository mount. */
  extraScopes?: readonly string[];
  /** Statuses >= 400 that the caller handles itself (e.g. 404 for "does it exist"). */
  accept?: readonly number[];
  /** Follow 3xx (default true for GET/HEAD). */
  followRedirects?: boolean;
  /** Retry transient failures (default true). Uploads turn this off and resume instead. */
  retry?: boolean;
  /** For error messages: what is being done. */
  op: string;
  signal?: AbortSignal;
}

export interface SendResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData<unknown>['body'];
  /** The URL that answered (after redirects). */
  url: URL;
  /** True if a redirect left the registry's host (Authorization was dropped). */
  crossHost: boolean;
}

export function header(h: SendResult['headers'], name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

const MAX_REDIRECTS = 5;

export class RegistryClient {
  readonly retryPolicy: RetryPolicy;
  private readonly agents = new Map<string, Agent>();
  private readonly auth: Authenticator;
  private readonly userAgent: string;

  constructor(private readonly opts: RegistryClientOptions = {}) {
    this.retryPolicy = { ...defaultRetryPolicy, ...opts.retry };
    this.userAgent = opts.userAgent ?? 'obdkit/0.1';
    const providers: (CredentialProvider | undefined)[] = [opts.credentials];
    if (opts.dockerConfig !== false) providers.push(dockerConfigProvider(opts.dockerConfig));
    this.auth = new Authenticator({
      credentials: chainProviders(...providers),
      dispatcherFor: (url) => this.dispatcherFor(url.host),
      userAgent: this.userAgent,
    });
  }

  hostOptions(host: string): RegistryHostOptions {
    return this.opts.hosts?.[host] ?? {};
  }

  scheme(host: string): 'http' | 'https' {
    const o = this.hostOptions(host);
    if (o.insecure !== undefined) return o.insecure ? 'http' : 'https';
    return isLoopbackHost(host) ? 'http' : 'https';
  }

  baseUrl(host: string): string {
    return `${this.scheme(host)}://${host}`;
  }

  /** The undici Agent for a host, with that host's TLS settings. */
  dispatcherFor(host: string): Agent {
    let a = this.agents.get(host);
    if (!a) {
      const o = this.hostOptions(host);
      const connect: { ca?: string | Buffer; rejectUnauthorized?: boolean } = {};
      if (o.ca) connect.ca = o.ca;
      if (o.skipTlsVerify) connect.rejectUnauthorized = false;
      a = new Agent({ connect, keepAliveTimeout: 10_000, bodyTimeout: 120_000, headersTimeout: 120_000 });
      this.agents.set(host, a);
    }
    return a;
  }

  async close(): Promise<void> {
    const all = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(all.map((a) => a.close()));
  }

  /**
   * Sends one registry request. Returns any status < 400 that is not a followed redirect, and any
   * status in `accept`; everything else becomes an ObdkitError naming the reference and next step.
   */
  async send(req: SendRequest): Promise<SendResult> {
    const retry = req.retry ?? true;
    const attempts = retry ? this.retryPolicy.attempts : 1;
    const scopes = [scopeFor(req.ref.repository, req.actions), ...(req.extraScopes ?? [])];
    const ctx = { ref: formatReference(req.ref), host: req.ref.host, op: req.op, scope: req.actions.join(',') };
    // One retry to learn the challenge, one more if the token we sent was refused (expired or revoked).
    let authRetries = 0;
    for (let attempt = 1; ; attempt++) {
      let res: SendResult;
      const sentAuth = await this.auth.authorization(req.ref.host, scopes);
      try {
        res = await this.sendFollowing(req, sentAuth);
      } catch (err) {
        if (err instanceof Error && err.name === 'AbortError') throw err;
        if (attempt < attempts && isTransientNetworkError(err)) {
          log.debug({ op: req.op, attempt, err: (err as Error).message }, 'registry request failed, retrying');
          await backoff(attempt, this.retryPolicy);
          continue;
        }
        throw registryNetworkError(err, ctx, this.scheme(req.ref.host));
      }
      if (res.status === 401 && !res.crossHost && authRetries < 2) {
        const www = header(res.headers, 'www-authenticate');
        await res.body.dump();
        if (await this.auth.onUnauthorized(req.ref.host, scopes, www, sentAuth)) {
          authRetries++;
          attempt--;
          continue;
        }
        const denied = www !== undefined && /error="?insufficient_scope/.test(www);
        throw registryHttpError(denied ? 403 : 401, '', ctx);
      }
      if (res.status >= 400 && !(req.accept ?? []).includes(res.status)) {
        const text = req.method === 'HEAD' ? '' : await res.body.text().catch(() => '');
        if (req.method === 'HEAD') await res.body.dump();
        if (attempt < attempts && isTransientStatus(res.status)) {
          log.debug({ op: req.op, attempt, status: res.status }, 'registry answered with a transient error, retrying');
          await backoff(attempt, this.retryPolicy);
          continue;
        }
        throw registryHttpError(res.status, text, ctx);
      }
      return res;
    }
  }

  private async sendFollowing(req: SendRequest, authorization: string | undefined): Promise<SendResult> {
    const registryHost = req.ref.host;
    let url = new URL(req.target, this.baseUrl(registryHost));
    let method: HttpMethod = req.method;
    const follow = req.followRedirects ?? (req.method === 'GET' || req.method === 'HEAD');
    let crossHost = false;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      // Storage backends behind a redirect get pre-signed URLs: our registry token must not leak there.
      if (authorization && !crossHost) headers.authorization = authorization;
      const body = hop === 0 && req.body ? req.body() : undefined;
      const options: Parameters<typeof request>[1] = {
        method,
        headers,
        dispatcher: this.dispatcherFor(url.host),
      };
      if (body !== undefined) options.body = body;
      if (req.signal) options.signal = req.signal;
      let r: Dispatcher.ResponseData<unknown>;
      try {
        r = await request(url, options);
      } catch (err) {
        if (body && typeof body === 'object' && 'destroy' in body && typeof body.destroy === 'function') body.destroy();
        throw err;
      }
      const location = r.headers.location;
      const loc = Array.isArray(location) ? location[0] : location;
      if (follow && [301, 302, 303, 307, 308].includes(r.statusCode) && loc) {
        await r.body.dump();
        if (hop >= MAX_REDIRECTS) throw new Error(`too many redirects (last: ${loc})`);
        const next = new URL(loc, url);
        if (next.host !== registryHost) crossHost = true;
        if (r.statusCode === 303 && method !== 'HEAD') method = 'GET';
        url = next;
        continue;
      }
      return { status: r.statusCode, headers: r.headers, body: r.body, url, crossHost };
    }
  }
}
