// Registry of open sessions by id. Control.Solve, LLBBridge calls and the backend may look a session up
// before its Control.Session stream has arrived (all of a build's calls start concurrently), so lookups
// wait until the session registers or the caller gives up.
import { ObdkitError } from '../util/errors.js';
import type { SessionClient } from './session-client.js';

export class SessionRegistry {
  private readonly open = new Map<string, SessionClient>();
  private readonly waiters = new Map<string, Set<(s: SessionClient) => void>>();

  add(session: SessionClient): void {
    this.open.set(session.id, session);
    const ws = this.waiters.get(session.id);
    if (ws) {
      this.waiters.delete(session.id);
      for (const w of ws) w(session);
    }
    void session.closed.then(() => {
      if (this.open.get(session.id) === session) this.open.delete(session.id);
    });
  }

  get(id: string): SessionClient | undefined {
    return this.open.get(id);
  }

  /** Resolves once session `id` is open; rejects when `signal` aborts. */
  wait(id: string, signal: AbortSignal): Promise<SessionClient> {
    const s = this.open.get(id);
    if (s) return Promise.resolve(s);
    if (signal.aborted) return Promise.reject(abortError(signal, id));
    return new Promise((resolve, reject) => {
      let set = this.waiters.get(id);
      if (!set) this.waiters.set(id, (set = new Set()));
      const waiter = (session: SessionClient) => {
        signal.removeEventListener('abort', onAbort);
        resolve(session);
      };
      const onAbort = () => {
        set.delete(waiter);
        if (set.size === 0 && this.waiters.get(id) === set) this.waiters.delete(id);
        reject(abortError(signal, id));
      };
      set.add(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Every open session (shutdown closes them). */
  all(): SessionClient[] {
    return [...this.open.values()];
  }
}

function abortError(signal: AbortSignal, id: string): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return new ObdkitError('ECANCELED', `gave up waiting for session ${id}`, { ref: id });
}
