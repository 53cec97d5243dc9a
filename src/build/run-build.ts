// One build, from Dockerfile text to a solved layer chain plus image config, on a BuildService
// (service.ts). What differs between callers comes in as hooks: the CLI reads its context and secrets
// from this machine and prints progress; the server fetches them through the client's session and
// streams progress into Control.Status. Exporting the result is outputs.ts.
//
// Contract of runBuild:
//  - `request.dockerfile` is the Dockerfile text; `request.excludes` the parsed `.dockerignore`
//    patterns (also what `hooks.contexts` must leave out of context `request.contextName`).
//  - base image configs are looked up with a registry client built from the service's host settings and
//    `hooks.credentials`; `hooks.onImageLookup` is told around each lookup (for progress lines).
//  - solver progress events go to `hooks.progress`, sealed layers to `hooks.onLayer`, frontend warnings
//    to `hooks.onWarning`.
//  - `hooks.signal` cancels: the running step's container is killed and its device released; the
//    promise then rejects with the signal's reason.
//  - the returned chain's layer blobs live in the service's content store; nothing has to be released.
import type { Platform, Vertex } from '../solver/ops.js';
import type { ProgressEvent } from '../solver/solver.js';
import type { CredentialProvider } from '../registry/credentials.js';
import { resolveImage } from '../registry/pull.js';
import { parseReference } from '../registry/reference.js';
import { ObdkitError } from '../util/errors.js';
import { convertDockerfile, type ConvertResult, type ResolvedImage } from '../../frontend/index.js';
import { BuildExecutor } from '../../worker/build/executor.js';
import type { ContextProvider, SecretProvider } from '../../worker/build/providers.js';
import { isLayersResult, type LayersResult } from '../../worker/build/result.js';
import type { SealOutcome } from '../../worker/commit/seal.js';
import type { BuildService } from './service.js';

export interface BuildRequest {
  dockerfile: string;
  /** Name used in messages and locations (`Dockerfile`). */
  filename?: string;
  target?: string;
  buildArgs?: Record<string, string>;
  labels?: Record<string, string>;
  /** Target platform (default: this machine's). */
  platform?: Platform;
  /** true: no cache for any step; a list: no cache for steps of these stages. */
  noCache?: boolean | string[];
  /** `.dockerignore` patterns. */
  excludes?: string[];
  /** Name of the build context the Dockerfile's COPY/ADD read (default `context`). */
  contextName?: string;
}

export interface BuildHooks {
  contexts: ContextProvider;
  secrets?: SecretProvider;
  /** Registry credentials, asked before the Docker config file. */
  credentials?: CredentialProvider;
  progress?: (e: ProgressEvent) => void;
  onLayer?: (vertex: Vertex, outcome: SealOutcome) => void;
  onWarning?: (message: string) => void;
  /** Wraps each base image config lookup (`FROM` lines), e.g. to show it as a progress step. */
  onImageLookup?: <T>(ref: string, platform: Platform, lookup: () => Promise<T>) => Promise<T>;
  signal?: AbortSignal;
}

export interface BuiltImage {
  chain: LayersResult;
  image: ConvertResult['image'];
  platform: Platform;
  targetStage: string;
  /** Cache key of the target vertex. */
  key: string;
  /** True when the whole target came from the cache. */
  cached: boolean;
}

/** Converts and solves; see the contract at the top of this file. */
export async function runBuild(service: BuildService, request: BuildRequest, hooks: BuildHooks): Promise<BuiltImage> {
  const signal = hooks.signal ?? new AbortController().signal;
  signal.throwIfAborted();
  const registry = service.registryClient(hooks.credentials);
  try {
    const lookup = async (ref: string, platform: Platform): Promise<ResolvedImage> => {
      const img = await resolveImage(registry, parseReference(ref), platform);
      return { digest: img.manifestDigest, config: img.config.raw as ResolvedImage['config'] };
    };
    const resolveImageConfig = (ref: string, platform: Platform): Promise<ResolvedImage> =>
      hooks.onImageLookup ? hooks.onImageLookup(ref, platform, () => lookup(ref, platform)) : lookup(ref, platform);
    const conv = await convertDockerfile({
      dockerfile: request.dockerfile,
      filename: request.filename ?? 'Dockerfile',
      ...(request.target ? { target: request.target } : {}),
      buildArgs: request.buildArgs ?? {},
      ...(request.labels ? { labels: request.labels } : {}),
      ...(request.platform ? { targetPlatform: request.platform } : {}),
      excludes: request.excludes ?? [],
      contextName: request.contextName ?? 'context',
      noCache: request.noCache ?? false,
      resolveImageConfig,
    });
    for (const w of conv.warnings) hooks.onWarning?.(w);
    signal.throwIfAborted();
    const executor = new BuildExecutor({
      store: service.store,
      snapshotter: service.snapshotter,
      registry,
      contexts: hooks.contexts,
      ...(hooks.secrets ? { secrets: hooks.secrets } : {}),
      ...(service.runc ? { runc: service.runc } : {}),
      remote: service.remoteFetcher,
      ...(hooks.onLayer ? { onLayer: hooks.onLayer } : {}),
    });
    const solved = await service
      .withContexts(hooks.contexts, () =>
        service.solver.solve(conv.graph, conv.target, {
          executor,
          noCache: request.noCache === true,
          signal,
          ...(hooks.progress ? { progress: hooks.progress } : {}),
        }),
      )
      .finally(() => executor.close());
    if (signal.aborted) throw signal.reason;
    if (!isLayersResult(solved.result)) {
      throw new ObdkitError('EBUILD', `the target is not a filesystem (${solved.result.kind})`, { step: conv.targetStage });
    }
    return { chain: solved.result, image: conv.image, platform: conv.platform, targetStage: conv.targetStage, key: solved.key, cached: solved.cached };
  } catch (err) {
    // A step torn down by cancellation fails with its own error; the caller wants the cancellation.
    if (signal.aborted) throw signal.reason;
    throw err;
  } finally {
    await registry.close();
  }
}
