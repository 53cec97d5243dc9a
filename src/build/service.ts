// The long-lived half of building: one content store, one block-device snapshotter and one solver per
// process, shared by every build that process runs (the CLI runs one; `obdkit serve` runs many at once,
// and the solver makes identical steps of concurrent builds run once). Per-build parts — where the build
// context comes from, secrets, registry credentials, progress — are passed to each build (run-build.ts).
// The solver's content hasher is process-wide, but contexts belong to one build: the build that asks is
// found through an AsyncLocalStorage scope that run-build.ts opens around each solve. Cache hits are
// checked against the content store, so a step whose blobs were removed runs again.
import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Solver } from '../solver/solver.js';
import { FileCacheIndex } from '../solver/cache-index.js';
import type { ContentRequest } from '../solver/cache-key.js';
import { RegistryClient, type RegistryHostOptions } from '../registry/client.js';
import type { CredentialProvider } from '../registry/credentials.js';
import { ContentStore } from '../store/content-store.js';
import { ObdkitError } from '../util/errors.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
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
  readonly solver: Solver<BuildResult>;
  readonly runc: string | undefined;
  private readonly scope = new AsyncLocalStorage<ContextProvider>();
  private readonly hosts: Record<string, RegistryHostOptions>;

  private constructor(opts: BuildServiceOptions) {
    this.store = new ContentStore(opts.root);
    this.snapshotter = new FuseLoopSnapshotter({ runDir: this.store.runDir });
    this.runc = opts.runc;
    this.hosts = hostOptions(opts.registries ?? {});
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
    return new RegistryClient({ hosts, ...(credentials ? { credentials } : {}) });
  }

  async close(): Promise<void> {
    await this.snapshotter.close();
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
