// Turning registry failures into ObdkitErrors a user can act on: each names the image reference,
// what obdkit was doing, the registry's own error code, and the next step (log in, check the name,
// switch to plain http). Codes: EREG_AUTH (401), EREG_DENIED (403), EREG_NOT_FOUND (404),
// EREG_HTTP (other statuses), EREG_NETWORK (connection failures), EREG_TLS (TLS handshake).
import { ObdkitError, errnoCode } from '../util/errors.js';

export interface RegistryErrorDetail {
  code: string;
  message: string;
}

/** Parses the distribution-spec error body `{"errors":[{"code","message","detail"}]}`, if it is one. */
export function parseErrorBody(text: string): RegistryErrorDetail[] {
  try {
    const v: unknown = JSON.parse(text);
    if (!v || typeof v !== 'object' || !('errors' in v) || !Array.isArray(v.errors)) return [];
    const out: RegistryErrorDetail[] = [];
    for (const e of v.errors as unknown[]) {
      if (e && typeof e === 'object') {
        const code = 'code' in e && typeof e.code === 'string' ? e.code : 'UNKNOWN';
        const message = 'message' in e && typeof e.message === 'string' ? e.message : '';
        out.push({ code, message });
      }
    }
    return out;
  } catch {
    return [];
  }
}

export interface RegistryErrorContext {
  /** The image reference (or host/repo) the operation was about. */
  ref: string;
  /** Registry host[:port]. */
  host: string;
  /** What obdkit was doing, e.g. "pull manifest", "upload blob sha256:…". */
  op: string;
  /** The token scope that was refused, if any. */
  scope?: string;
}

export function registryHttpError(status: number, bodyText: string, ctx: RegistryErrorContext): ObdkitError {
  const details = parseErrorBody(bodyText);
  const said = details.length
    ? ` (registry: ${details.map((d) => (d.message ? `${d.code}: ${d.message}` : d.code)).join('; ')})`
    : '';
  const context = { ref: ctx.ref, op: ctx.op, status, host: ctx.host };
  if (status === 401) {
    return new ObdkitError(
      'EREG_AUTH',
      `${ctx.op}: authentication required by ${ctx.host}${said}; run "docker login ${ctx.host}" or pass credentials for it`,
      context,
    );
  }
  if (status === 403) {
    return new ObdkitError(
      'EREG_DENIED',
      `${ctx.op}: access denied by ${ctx.host}${said}; check that the logged-in account may ${ctx.scope ?? 'access'} this repository (or run "docker login ${ctx.host}" with another account)`,
      context,
    );
  }
  if (status === 404) {
    return new ObdkitError(
      'EREG_NOT_FOUND',
      `${ctx.op}: not found on ${ctx.host}${said}; check the repository name and tag/digest (names are case-sensitive and Docker Hub images need a namespace like library/)`,
      context,
    );
  }
  return new ObdkitError('EREG_HTTP', `${ctx.op}: registry ${ctx.host} answered HTTP ${status}${said}`, context);
}

const tlsCodes = new Set([
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'EPROTO',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function causeCodes(err: unknown): string[] {
  const out: string[] = [];
  let e: unknown = err;
  for (let i = 0; e && i < 5; i++) {
    const c = errnoCode(e);
    if (c) out.push(c);
    e = e instanceof Error ? e.cause : undefined;
  }
  return out;
}

export function registryNetworkError(err: unknown, ctx: RegistryErrorContext, scheme: 'http' | 'https'): ObdkitError {
  const codes = causeCodes(err);
  const context = { ref: ctx.ref, op: ctx.op, host: ctx.host };
  const msg = err instanceof Error ? err.message : String(err);
  if (scheme === 'https' && codes.some((c) => tlsCodes.has(c))) {
    return new ObdkitError(
      'EREG_TLS',
      `${ctx.op}: TLS with ${ctx.host} failed (${codes.join(', ')}: ${msg}); if the registry speaks plain http use registry.insecure=true for http, or give its CA certificate`,
      context,
      { cause: err },
    );
  }
  const advice = codes.includes('ECONNREFUSED') ? '; is the registry running and the port right?' : '';
  return new ObdkitError(
    'EREG_NETWORK',
    `${ctx.op}: cannot reach ${scheme}://${ctx.host} (${codes.join(', ') || 'network error'}: ${msg})${advice}`,
    context,
    { cause: err },
  );
}
