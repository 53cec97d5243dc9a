// The long-lived half of building: one content store, one block-device snapshotter and one solver per
// process, shared by every build that process runs (the CLI runs one; `obdkit serve` runs many at once,
// and the solver makes identical steps of concurrent builds run once). Per-build parts — where the build
// context comes from, secrets, registry credentials, progress — are passed to each build (run-build.ts).
// The solver's content hasher is process-wide, but contexts belong to one build: the build that asks is
// found through an AsyncLocalStorage scope that run-build.ts opens around each solve. Cache hits are
// checked against the content store, so a step whose blobs were removed runs again.
// Devices may stack layers of an overlaybd base image that stay in the registry: the snapshotter reads
// them through one process-wide fetcher (worker/build/fetch-thread.ts: a RegistryFetcher on a thread
// of its own, chunk cache under the store root), so no device read waits for the main thread, which
// steps block with synchronous calls on their rootfs. Its registry client has this service's host
// settings; for credentials it asks the builds that are running — every client made by
// registryClient() lends its caller's credentials (a BuildKit session's) for as long as it is open —
// and then the Docker config file. A device outlives no build, so a lazily read base image whose
// repository needs the session's credentials is read while those credentials are at hand.
import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Solver } from '../solver/solver.js';
import { FileCacheIndex } from '../solver/cache-index.js';
import type { ContentRequest } from '../solver/cache-key.js';
import { RegistryClient, type RegistryHostOptions } from '../registry/client.js';
import type { CredentialProvider, Credentials } from '../registry/credentials.js';
import { ContentStore } from '../store/content-store.js';
import { ObdkitError } from '../util/errors.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import { ThreadedRegistryFetcher } from '../../worker/build/fetch-thread.js';
import { cleanupStale } from '../../worker/mount/teardown.js';
import { localContentHasher } from '../../worker/build/content-hash.js';
import type { ContextProvider } from '../../worker/build/providers.js';
import { StoreCheckedIndex } from '../../worker/build/checked-index.js';
import type { BuildResult } from '../../worker/build/result.js';

/** Per-registry settings, as `obdkit serve`'s config file or CLI flags give them. */
export interface RegistrySettings {
  /** Speak plain HTTP. */
  http?: boolean;
  /** Skip TLS verification. */
  insecure?: boolean;
  /** Extra CA certificate files (PEM). */
  ca?: string[];
}

export interface BuildServiceOptions {
  /** State root: content store, solver cache index, device state, per-build work dirs. */
  root: string;
  /** Steps executing at once across all builds (0 or absent: number of CPUs). */
  maxParallelism?: number;
  registries?: Record<string, RegistrySettings>;
  /** runc binary (default `runc` on PATH). */
  runc?: string;
}

export class BuildService {
  readonly store: ContentStore;
  readonly snapshotter: FuseLoopSnapshotter;
  /** Serves the devices' reads of layers that are still in a registry (counters: `await remoteFetcher.counters()`). */
  readonly remoteFetcher: ThreadedRegistryFetcher;
  readonly solver: Solver<BuildResult>;
  readonly runc: string | undefined;
  private readonly scope = new AsyncLocalStorage<ContextProvider>();
  private readonly hosts: Record<string, RegistryHostOptions>;
  /** Credentials of the registry clients handed out and not closed yet, oldest first. */
  private readonly lentCredentials = new Set<CredentialProvider>();

  private constructor(opts: BuildServiceOptions) {
    this.store = new ContentStore(opts.root);
    this.runc = opts.runc;
    this.hosts = hostOptions(opts.registries ?? {});
    this.remoteFetcher = new ThreadedRegistryFetcher({ hosts: this.hosts, credentials: (host) => this.lentCredential(host) });
    this.snapshotter = new FuseLoopSnapshotter({ runDir: this.store.runDir, remote: this.remoteFetcher });
    const hasher = async (req: ContentRequest): Promise<string> => {
      const contexts = this.scope.getStore();
      if (!contexts) throw new ObdkitError('EHASH', 'local content hashed outside of a build', { step: req.source.name });
      // The temporary path is where an unpinned `ADD <url>` is downloaded to be keyed by its content.
      return localContentHasher(contexts, () => this.store.tmpPath('hash'))(req);
    };
    const n = opts.maxParallelism && opts.maxParallelism > 0 ? opts.maxParallelism : availableParallelism();
    this.solver = new Solver<BuildResult>({
      index: new StoreCheckedIndex(new FileCacheIndex<BuildResult>(this.store.stateDir), this.store),
      concurrency: n,
      contentHasher: hasher,
    });
  }

  /** Opens the state root, first tearing down devices a previous process left behind. */
  static async open(opts: BuildServiceOptions): Promise<BuildService> {
    const s = new BuildService(opts);
    await mkdir(s.store.runDir, { recursive: true });
    await mkdir(s.store.workDir, { recursive: true });
    await cleanupStale(s.store.runDir);
    return s;
  }

  /** Runs `fn` with `contexts` as the provider the solver's content hasher reads. */
  withContexts<T>(contexts: ContextProvider, fn: () => Promise<T>): Promise<T> {
    return this.scope.run(contexts, fn);
  }

  /**
   * A registry client with this service's host settings plus `extra` (e.g. `registry.insecure` of an
   * output) and `credentials` asked first (the build client's own). The caller closes it.
   */
  registryClient(credentials?: CredentialProvider, extra: Record<string, RegistryHostOptions> = {}): RegistryClient {
    const hosts = { ...this.hosts };
    for (const [h, o] of Object.entries(extra)) hosts[h] = { ...hosts[h], ...o };
    if (!credentials) return new RegistryClient({ hosts });
    // Wrapped, so that each client lends its own entry even when two builds share one provider.
    const lent: CredentialProvider = (host) => credentials(host);
    this.lentCredentials.add(lent);
    return new LendingRegistryClient({ hosts, credentials }, () => this.lentCredentials.delete(lent));
  }

  async close(): Promise<void> {
    await this.snapshotter.close();
    await this.remoteFetcher.close();
  }

  /** The newest lent credentials that answer for `host`; a provider that fails is skipped. */
  private async lentCredential(host: string): Promise<Credentials | undefined> {
    for (const p of [...this.lentCredentials].reverse()) {
      try {
        const c = await p(host);
        if (c) return c;
      } catch {
        // A session that went away cannot answer; another one, or the Docker config, may.
      }
    }
    return undefined;
  }
}

/** A RegistryClient whose credentials stop being lent to the devices' client when it closes. */
class LendingRegistryClient extends RegistryClient {
  constructor(opts: ConstructorParameters<typeof RegistryClient>[0], private readonly onClose: () => void) {
    super(opts);
  }

  override async close(): Promise<void> {
    this.onClose();
    await super.close();
  }
}

function hostOptions(regs: Record<string, RegistrySettings>): Record<string, RegistryHostOptions> {
  const out: Record<string, RegistryHostOptions> = {};
  for (const [host, r] of Object.entries(regs)) {
    const o: RegistryHostOptions = {};
    if (r.http) o.insecure = true;
    if (r.insecure) o.skipTlsVerify = true;
    if (r.ca?.length) {
      o.ca = r.ca
        .map((f) => {
          try {
            return readFileSync(f, 'utf8');
          } catch (err) {
            throw new ObdkitError('ECONFIG', `cannot read registry CA: ${(err as Error).message}`, { file: f, ref: host });
          }
        })
        .join('\n');
    }
    out[host] = o;
  }
  return out;
}
