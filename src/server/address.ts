// Listen addresses in BuildKit's notation (`tcp://HOST:PORT`, `unix:///path`) and their grpc-js forms.
import { ObdkitError } from '../util/errors.js';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseAddress(addr: string): ListenAddress {
  if (addr.startsWith('unix://')) {
    const path = addr.slice('unix://'.length);
    if (!path.startsWith('/')) throw new ObdkitError('EADDR', `unix socket path must be absolute: ${addr}`);
    return { kind: 'unix', path };
  }
  if (addr.startsWith('tcp://')) {
    const rest = addr.slice('tcp://'.length);
    const m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(rest);
    if (!m) throw new ObdkitError('EADDR', `expected tcp://HOST:PORT, got ${addr}`);
    const port = Number(m[2]);
    if (port > 65535) throw new ObdkitError('EADDR', `port out of range in ${addr}`);
    const host = m[1]!.replace(/^\[|\]$/g, '');
    return { kind: 'tcp', host: host === '' ? '0.0.0.0' : host, port };
  }
  throw new ObdkitError('EADDR', `unsupported address ${addr} (use tcp://HOST:PORT or unix:///PATH)`);
}

export function grpcBindTarget(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix://${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export function formatAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix://${a.path}`;
  return a.host.includes(':') ? `tcp://[${a.host}]:${a.port}` : `tcp://${a.host}:${a.port}`;
}
