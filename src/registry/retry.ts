// Retry policy for registry traffic: which failures are transient (5xx, 429, dropped or refused
// connections) and exponential backoff with full jitter between attempts, so many clients retrying
// at once do not hit the registry in lockstep. Used by client.ts for single requests and by
// upload.ts around whole upload steps.
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode } from '../util/errors.js';

export interface RetryPolicy {
  /** Total attempts, including the first. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 };

const transientCodes = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

/** True for network failures worth retrying (looks through `cause` chains, as undici wraps errors). */
export function isTransientNetworkError(err: unknown): boolean {
  let e: unknown = err;
  for (let depth = 0; e && depth < 5; depth++) {
    const code = errnoCode(e);
    if (code && transientCodes.has(code)) return true;
    if (e instanceof Error && (e.message === 'terminated' || e.message === 'other side closed')) return true;
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}

export function isTransientStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** Delay before retry number `attempt` (1-based): uniform in [0, min(max, base * 2^(attempt-1))]. */
export function backoffDelay(attempt: number, policy: RetryPolicy = defaultRetryPolicy): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(Math.random() * cap);
}

export async function backoff(attempt: number, policy: RetryPolicy = defaultRetryPolicy): Promise<void> {
  await sleep(backoffDelay(attempt, policy));
}
