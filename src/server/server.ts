// Assembles the daemon's gRPC server: Control, LLBBridge and Health on every listen address (TCP or unix
// socket, optionally TLS with client-certificate checking), around one BuildBackend.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import { formatAddress, grpcBindTarget, parseAddress } from './address.js';
import type { BuildBackend } from './backend.js';
import { controlService, type ServerDeps } from './control.js';
import { gatewayService } from './gateway.js';
import { ControlService } from './gen/buildkit/control.js';
import { LLBBridgeService } from './gen/buildkit/gateway.js';
import type { BuildkitVersion } from './gen/buildkit/worker.js';
import { HealthService } from './gen/grpc/health/v1/health.js';
import { healthService } from './health.js';
import { JobRegistry, type JobRegistryOptions } from './jobs.js';
import { SessionRegistry } from './sessions.js';
import { workerRecord, type WorkerInfoOptions } from './worker-info.js';

/** Go clients send and accept up to 16 MiB per message on the main connection. */
const MAX_MESSAGE = 16 << 20;

export interface TlsFiles {
  cert: string;
  key: string;
  /** CA for client certificates; when set, clients must present one. */
  ca?: string;
}

export interface ObdkitServerOptions {
  addresses: string[];
  backend: BuildBackend;
  tls?: TlsFiles;
  version?: Partial<BuildkitVersion>;
  worker?: WorkerInfoOptions;
  jobs?: JobRegistryOptions;
}

export interface RunningServer {
  /** The bound addresses, with real ports for `:0`. */
  addresses: string[];
  /** Stops accepting, cancels running builds, closes sessions. */
  close(): Promise<void>;
}

export const OBDKIT_VERSION: BuildkitVersion = { package: 'github.com/obdkit/obdkit', version: 'v0.1.0', revision: '' };

async function credentials(tls: TlsFiles | undefined): Promise<ServerCredentials> {
  if (!tls) return ServerCredentials.createInsecure();
  const [cert, key, ca] = await Promise.all([readFile(tls.cert), readFile(tls.key), tls.ca ? readFile(tls.ca) : Promise.resolve(null)]);
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
}

export async function startServer(opts: ObdkitServerOptions): Promise<RunningServer> {
  if (opts.addresses.length === 0) throw new ObdkitError('EADDR', 'no listen address given');
  const version: BuildkitVersion = { ...OBDKIT_VERSION, ...opts.version };
  const jobs = new JobRegistry(opts.jobs);
  const sessions = new SessionRegistry();
  const deps: ServerDeps = { backend: opts.backend, jobs, sessions, version, worker: workerRecord(version, opts.worker) };
  let serving = true;
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    // Builds hold calls open for hours without traffic; clients may ping while they wait.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 5000,
  });
  server.addService(ControlService, controlService(deps));
  server.addService(LLBBridgeService, gatewayService(deps));
  server.addService(HealthService, healthService(() => serving));
  const creds = await credentials(opts.tls);
  const bound: string[] = [];
  try {
    for (const raw of opts.addresses) {
      const addr = parseAddress(raw);
      if (addr.kind === 'unix') {
        await mkdir(dirname(addr.path), { recursive: true });
        await rm(addr.path, { force: true });
      }
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync(grpcBindTarget(addr), creds, (err, p) => (err ? reject(err) : resolve(p))),
      );
      bound.push(formatAddress(addr.kind === 'tcp' ? { ...addr, port } : addr));
    }
  } catch (err) {
    server.forceShutdown();
    throw new ObdkitError('EADDR', `cannot listen: ${err instanceof Error ? err.message : String(err)}`);
  }
  log.info({ addresses: bound, tls: opts.tls !== undefined }, 'obdkit serving');
  return {
    addresses: bound,
    async close() {
      serving = false;
      jobs.close();
      for (const s of sessions.all()) s.destroy();
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
      for (const raw of opts.addresses) {
        const a = parseAddress(raw);
        if (a.kind === 'unix') await rm(a.path, { force: true });
      }
    },
  };
}
