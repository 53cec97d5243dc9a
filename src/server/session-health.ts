// Liveness of a session, checked the way BuildKit does: every 5 s a Health.Check call through the tunnel,
// each allowed max(15 s, 1.5 × the last answer's time); two failures in a row drop the session, which
// cancels whatever the build was waiting for from that client.
import { log } from '../util/log.js';
import { HealthCheckRequest, HealthCheckResponse } from './gen/grpc/health/v1/health.js';
import type { SessionClient } from './session-client.js';

export const HEALTH_CHECK = '/grpc.health.v1.Health/Check';

export interface HealthOptions {
  intervalMs?: number;
  minTimeoutMs?: number;
  maxFailures?: number;
}

/** Starts checking `session`; stops by itself when the session closes. */
export function monitorSession(session: SessionClient, opts: HealthOptions = {}): void {
  if (!session.has(HEALTH_CHECK)) return;
  const interval = opts.intervalMs ?? 5000;
  const minTimeout = opts.minTimeoutMs ?? 15_000;
  const maxFailures = opts.maxFailures ?? 2;
  let lastMs = 0;
  let failures = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(check, interval);
    timer.unref();
  };
  const check = async () => {
    const started = Date.now();
    try {
      await session.unary(HEALTH_CHECK, HealthCheckRequest, HealthCheckResponse, { service: '' }, {
        signal: AbortSignal.timeout(Math.max(minTimeout, Math.round(lastMs * 1.5))),
      });
      lastMs = Date.now() - started;
      failures = 0;
    } catch (err) {
      if (stopped) return;
      failures++;
      log.warn({ session: session.id, failures, err: err instanceof Error ? err.message : String(err) }, 'session health check failed');
      if (failures >= maxFailures) {
        log.warn({ session: session.id }, 'dropping unresponsive session');
        session.destroy();
        return;
      }
    }
    schedule();
  };
  void session.closed.then(() => {
    stopped = true;
    if (timer) clearTimeout(timer);
  });
  schedule();
}
