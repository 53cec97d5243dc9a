// `obdkit serve`: runs the BuildKit-compatible daemon (src/server) on TCP and/or unix-socket addresses,
// with optional TLS, configured by flags and a TOML file (src/server/config.ts). The build pipeline is
// supplied by the caller as a BuildBackend factory, so this command knows nothing of how builds run.
import { mkdir } from 'node:fs/promises';
import type { Command } from 'commander';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import type { BuildBackend } from '../server/backend.js';
import { defaultServeConfig, loadServeConfig, type ServeConfig } from '../server/config.js';
import { startServer, type TlsFiles } from '../server/server.js';
import type { Platform } from '../server/gen/buildkit/ops.js';

export type { ServeConfig, RegistryHostConfig, WorkerConfig, GcPolicyConfig } from '../server/config.js';

export const DEFAULT_ROOT = '/var/lib/obdkit';
export const DEFAULT_ADDRESS = 'unix:///run/obdkit/obdkit.sock';

/** What the backend factory gets: the merged configuration. */
export interface ServeOptions {
  /** State directory (layer cache, writable layers, metadata). */
  root: string;
  addresses: string[];
  tls?: TlsFiles;
  config: ServeConfig;
}

interface ServeFlags {
  addr?: string[];
  tlscert?: string;
  tlskey?: string;
  tlscacert?: string;
  config?: string;
  root?: string;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function platformOf(s: string): Platform {
  const [os = 'linux', architecture = '', variant = ''] = s.split('/');
  return { OS: os, Architecture: architecture, Variant: variant, OSVersion: '', OSFeatures: [] };
}

/** Merges flags over the config file over defaults. */
export async function resolveServeOptions(flags: ServeFlags): Promise<ServeOptions> {
  const config = flags.config ? await loadServeConfig(flags.config) : defaultServeConfig();
  const addresses = flags.addr?.length ? flags.addr : config.addresses.length ? config.addresses : [DEFAULT_ADDRESS];
  let tls: TlsFiles | undefined = config.tls ? { ...config.tls } : undefined;
  if (flags.tlscert || flags.tlskey || flags.tlscacert) {
    if (!flags.tlscert || !flags.tlskey) throw new ObdkitError('EUSAGE', '--tlscert and --tlskey must be given together');
    tls = { cert: flags.tlscert, key: flags.tlskey, ...(flags.tlscacert ? { ca: flags.tlscacert } : {}) };
  }
  const opts: ServeOptions = { root: flags.root ?? config.root ?? DEFAULT_ROOT, addresses, config };
  if (tls) opts.tls = tls;
  return opts;
}

export function registerServeCommand(
  program: Command,
  makeBackend: (opts: ServeOptions) => BuildBackend | Promise<BuildBackend>,
): void {
  program
    .command('serve')
    .description('Run the BuildKit-compatible build daemon (buildctl and docker buildx --driver remote connect to it)')
    .option('--addr <address>', 'listen address, tcp://HOST:PORT or unix:///PATH (repeatable)', collect)
    .option('--tlscert <file>', 'server certificate (PEM)')
    .option('--tlskey <file>', 'server private key (PEM)')
    .option('--tlscacert <file>', 'CA for client certificates; when given, clients must present one')
    .option('--config <file>', 'TOML configuration file')
    .option('--root <dir>', `state directory (default ${DEFAULT_ROOT})`)
    .action(async (flags: ServeFlags) => {
      const opts = await resolveServeOptions(flags);
      await mkdir(opts.root, { recursive: true });
      const backend = await makeBackend(opts);
      const server = await startServer({
        addresses: opts.addresses,
        backend,
        ...(opts.tls ? { tls: opts.tls } : {}),
        worker: {
          labels: opts.config.worker.labels,
          gcPolicy: opts.config.worker.gcPolicy,
          ...(opts.config.worker.platforms.length ? { platforms: opts.config.worker.platforms.map(platformOf) } : {}),
        },
      });
      await new Promise<void>((resolve) => {
        const stop = (sig: NodeJS.Signals) => {
          log.info({ signal: sig }, 'shutting down');
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await server.close();
    });
}
