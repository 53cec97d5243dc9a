// A small HTTP proxy for tests that sits in front of a registry and injects faults by rule: answer
// 500 without forwarding, cut the connection halfway through a request body, or forward the request
// and then drop the response (the registry acted, the client never hears). It logs every request
// with its outcome so tests can check the order of operations.
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FaultAction = 'status500' | 'drop-mid-body' | 'drop-response';

export interface FaultRule {
  method: string;
  path: RegExp;
  action: FaultAction;
  /** How many matching requests to fault (default 1); Infinity for all. */
  times?: number;
  /** Skip this many matching requests before faulting (default 0). */
  after?: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  status: number | 'dropped';
}

export interface FaultProxy {
  host: string;
  port: number;
  log: LoggedRequest[];
  rules: FaultRule[];
  close(): Promise<void>;
}

export async function startFaultProxy(upstreamPort: number, rules: FaultRule[] = []): Promise<FaultProxy> {
  const log: LoggedRequest[] = [];
  const seen = new Map<FaultRule, number>();
  const state = { rules };
  const pick = (req: IncomingMessage): FaultAction | undefined => {
    for (const r of state.rules) {
      if (r.method !== req.method || !r.path.test(req.url ?? '')) continue;
      const n = (seen.get(r) ?? 0) + 1;
      seen.set(r, n);
      const skip = r.after ?? 0;
      if (n > skip && n <= skip + (r.times ?? 1)) return r.action;
    }
    return undefined;
  };
  const server: Server = createServer((req, res) => {
    const entry: LoggedRequest = { method: req.method ?? '', path: req.url ?? '', status: 'dropped' };
    log.push(entry);
    const action = pick(req);
    if (action === 'status500') {
      req.resume();
      req.on('end', () => {
        entry.status = 500;
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}');
      });
      return;
    }
    const up = httpRequest(
      { host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        if (action === 'drop-response') {
          ur.resume();
          ur.on('end', () => req.socket.destroy());
          return;
        }
        entry.status = ur.statusCode ?? 0;
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        ur.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    if (action === 'drop-mid-body') {
      const total = Number(req.headers['content-length'] ?? 0);
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
        if (n >= total / 2) {
          up.destroy();
          req.socket.destroy();
          return;
        }
        if (!up.write(c)) {
          req.pause();
          up.once('drain', () => req.resume());
        }
      });
      req.on('end', () => up.end());
      return;
    }
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    port,
    log,
    get rules() {
      return state.rules;
    },
    set rules(r: FaultRule[]) {
      state.rules = r;
      seen.clear();
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
