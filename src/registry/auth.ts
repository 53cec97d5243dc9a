// Registry authentication: parsing `WWW-Authenticate` challenges, Basic credentials, and the
// Bearer token flow (GET realm?service=…&scope=… with Basic credentials when we have them; token
// from `token` or `access_token`). Tokens are cached per host + scope set until shortly before they
// expire; a 401 with a cached token drops it so the next attempt fetches a fresh one. client.ts
// calls `authorization()` before each request and `onUnauthorized()` after a 401.
import { request, type Dispatcher } from 'undici';
import { ObdkitError } from '../util/errors.js';
import { asNumber, asObject, asString, JsonPath, optional, parseJson } from '../oci/validate.js';
import type { CredentialProvider, Credentials } from './credentials.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses one or more challenges, e.g. `Bearer realm="…",service="…",scope="…"`. */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  while (i < s.length) {
    skipWs();
    const schemeMatch = /^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*/.exec(s.slice(i));
    if (!schemeMatch) break;
    const challenge: Challenge = { scheme: schemeMatch[0].toLowerCase(), params: {} };
    i += schemeMatch[0].length;
    out.push(challenge);
    for (;;) {
      skipWs();
      const start = i;
      const nameMatch = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+/.exec(s.slice(i));
      if (!nameMatch) break;
      i += nameMatch[0].length;
      skipWs();
      if (s[i] !== '=') {
        // Not a parameter: the start of the next challenge.
        i = start;
        break;
      }
      i++;
      skipWs();
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i];
          i++;
        }
        i++;
      } else {
        const m = /^[^,\s]*/.exec(s.slice(i))!;
        value = m[0];
        i += value.length;
      }
      challenge.params[nameMatch[0].toLowerCase()] = value;
      skipWs();
      if (s[i] === ',') i++;
    }
    skipWs();
    if (s[i] === ',') i++;
  }
  return out;
}

export function scopeFor(repository: string, actions: readonly string[]): string {
  return `repository:${repository}:${[...actions].sort().join(',')}`;
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

export interface AuthenticatorOptions {
  credentials: CredentialProvider;
  /** Dispatcher to use for a token realm URL (TLS settings of the realm's host). */
  dispatcherFor: (url: URL) => Dispatcher;
  userAgent: string;
}

/** Per-client authentication state: known challenges per host, cached tokens per host + scopes. */
export class Authenticator {
  private readonly challenges = new Map<string, Challenge>();
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  private readonly credCache = new Map<string, Promise<Credentials | undefined>>();

  constructor(private readonly opts: AuthenticatorOptions) {}

  private creds(host: string): Promise<Credentials | undefined> {
    let p = this.credCache.get(host);
    if (!p) {
      p = Promise.resolve(this.opts.credentials(host));
      this.credCache.set(host, p);
    }
    return p;
  }

  /** The Authorization header to send, if this host is known to want one. */
  async authorization(host: string, scopes: readonly string[]): Promise<string | undefined> {
    const ch = this.challenges.get(host);
    if (!ch) return undefined;
    if (ch.scheme === 'basic') {
      const c = await this.creds(host);
      return c ? basicHeader(c) : undefined;
    }
    if (ch.scheme === 'bearer') return (await this.token(host, ch, scopes)).header;
    return undefined;
  }

  /**
   * Records the challenge of a 401 and forgets the token that was refused. Returns true when a
   * retry can send something new (first challenge, or a token that may have expired).
   */
  async onUnauthorized(host: string, scopes: readonly string[], wwwAuthenticate: string | undefined, sent: string | undefined): Promise<boolean> {
    const chs = wwwAuthenticate ? parseWwwAuthenticate(wwwAuthenticate) : [];
    const ch = chs.find((c) => c.scheme === 'bearer') ?? chs.find((c) => c.scheme === 'basic');
    if (!ch) return false;
    this.challenges.set(host, ch);
    if (ch.scheme === 'basic') {
      const c = await this.creds(host);
      return c !== undefined && sent !== basicHeader(c);
    }
    if (ch.scheme !== 'bearer') return false;
    if (ch.params.error === 'insufficient_scope' && sent !== undefined && sent.startsWith('Bearer ')) {
      // The token was valid but does not grant this: a new one would say the same.
      return false;
    }
    const key = tokenKey(host, scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.header === sent) {
      this.tokens.delete(key);
      return true;
    }
    // Anything else (no token sent, or another request already refreshed it) is worth one more try.
    return true;
  }

  private async token(host: string, ch: Challenge, scopes: readonly string[]): Promise<CachedToken> {
    const key = tokenKey(host, scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(host, ch, scopes).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    const t = await p;
    this.tokens.set(key, t);
    return t;
  }

  private async fetchToken(host: string, ch: Challenge, scopes: readonly string[]): Promise<CachedToken> {
    const realm = ch.params.realm;
    if (!realm) throw new ObdkitError('EREG_AUTH', `registry ${host} asked for a bearer token without a realm`, { host });
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new ObdkitError('EREG_AUTH', `registry ${host} sent an invalid token realm ${JSON.stringify(realm)}`, { host });
    }
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent, accept: 'application/json' };
    const c = await this.creds(host);
    if (c) headers.authorization = basicHeader(c);
    const started = Date.now();
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: 'GET', headers, dispatcher: this.opts.dispatcherFor(url) });
    } catch (err) {
      throw new ObdkitError('EREG_AUTH', `cannot reach token server ${url.origin} for ${host}: ${(err as Error).message}`, { host }, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new ObdkitError(
        'EREG_AUTH',
        `token server for ${host} refused ${c ? `the credentials of user ${c.username}` : 'anonymous access'} (HTTP ${res.statusCode}); run "docker login ${host}"`,
        { host, status: res.statusCode },
      );
    }
    if (res.statusCode !== 200) {
      throw new ObdkitError('EREG_AUTH', `token server for ${host} answered HTTP ${res.statusCode}: ${text.slice(0, 200)}`, { host, status: res.statusCode });
    }
    const p = new JsonPath(`token response from ${url.origin}`);
    const o = asObject(parseJson(text, p.source), p);
    const token = optional(o.token, p.at('token'), asString) ?? optional(o.access_token, p.at('access_token'), asString);
    if (!token) p.fail('no "token" or "access_token"');
    // The spec's default lifetime is 60 s; renew a little early so a request never carries a stale token.
    const expiresIn = optional(o.expires_in, p.at('expires_in'), asNumber) ?? 60;
    return { header: `Bearer ${token}`, expiresAt: started + Math.max(10, expiresIn - 10) * 1000 };
  }
}

function tokenKey(host: string, scopes: readonly string[]): string {
  return `${host} ${[...scopes].sort().join(' ')}`;
}
