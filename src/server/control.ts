// The Control service: what buildctl and buildx call on the main port. Solve runs in one of two modes:
// "forwarding" (Frontend empty, no Definition: the client drives the frontend through LLBBridge and hands
// the result back with Return, see gateway.ts) or "direct frontend" (older clients name the frontend in
// Solve itself). Either way the result goes to the backend's export, progress ends before Solve answers,
// and client cancellation aborts the build's AbortSignal.
import { randomUUID } from 'node:crypto';
import { Metadata, status as GrpcStatus, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import type { BuildBackend, BuildContext, CacheSpec, DiskUsageEntry, ExporterSpec, FrontendRequest, FrontendResult } from './backend.js';
import { RemoteBuildSession } from './build-session.js';
import {
  type BuildHistoryEvent,
  type BuildHistoryRequest,
  type BytesMessage,
  type ControlServer,
  type PruneRequest,
  type SolveRequest,
  type StatusRequest,
  type StatusResponse,
  type UsageRecord,
} from './gen/buildkit/control.js';
import type { BuildkitVersion, WorkerRecord } from './gen/buildkit/worker.js';
import { GrpcStatusError, toServiceError, unimplemented } from './grpc-errors.js';
import { unaryHandler } from './handlers.js';
import type { JobRegistry } from './jobs.js';
import { SessionClient } from './session-client.js';
import { monitorSession } from './session-health.js';
import type { SessionRegistry } from './sessions.js';
import { SessionTunnel } from './tunnel.js';

export interface ServerDeps {
  backend: BuildBackend;
  jobs: JobRegistry;
  sessions: SessionRegistry;
  version: BuildkitVersion;
  worker: WorkerRecord;
}

const SESSION_UUID = 'x-docker-expose-session-uuid';
const SESSION_SHAREDKEY = 'x-docker-expose-session-sharedkey';
const SESSION_METHODS = 'x-docker-expose-session-grpc-method';

/** Upstream Dockerfile frontend images: served by the native frontend instead of being run. */
const UPSTREAM_DOCKERFILE_FRONTEND = /^(docker\.io\/)?docker\/dockerfile(-upstream)?(:[^@]*)?(@sha256:[0-9a-f]{64})?$/;

/** Maps a requested frontend to the one the backend runs, or fails clearly. */
export function resolveFrontend(frontend: string, attrs: Record<string, string>): string {
  if (frontend === 'dockerfile.v0') return frontend;
  if (frontend === 'gateway.v0') {
    const source = (attrs['source'] ?? '').trim();
    if (UPSTREAM_DOCKERFILE_FRONTEND.test(source)) return 'dockerfile.v0';
    throw new GrpcStatusError(
      GrpcStatus.UNIMPLEMENTED,
      `frontend image ${JSON.stringify(source)} cannot be run by obdkit; only the built-in Dockerfile frontend is available`,
    );
  }
  throw new GrpcStatusError(GrpcStatus.UNIMPLEMENTED, `frontend ${JSON.stringify(frontend)} is not supported by obdkit (use dockerfile.v0)`);
}

export function frontendRequest(
  frontend: string,
  attrs: Record<string, string>,
  cacheImports: CacheSpec[],
  inputNames: string[],
): FrontendRequest {
  const req: FrontendRequest = { frontend: resolveFrontend(frontend, attrs), attrs: { ...attrs }, cacheImports, inputNames };
  const rid = attrs['requestid'];
  if (rid !== undefined && rid !== '') req.requestId = rid;
  return req;
}

/** The exporter list: `Exporters` when present (fields 3/4 then only duplicate the first entry). */
export function normalizeExporters(req: SolveRequest): ExporterSpec[] {
  if (req.Exporters.length > 0) return req.Exporters.map((e, index) => ({ type: e.Type, attrs: { ...e.Attrs }, index }));
  if (req.ExporterDeprecated !== '') return [{ type: req.ExporterDeprecated, attrs: { ...req.ExporterAttrsDeprecated }, index: 0 }];
  return [];
}

function cacheOptions(req: SolveRequest): { exports: CacheSpec[]; imports: CacheSpec[] } {
  const c = req.Cache;
  const exports: CacheSpec[] = (c?.Exports ?? []).map((e) => ({ type: e.Type, attrs: { ...e.Attrs } }));
  const imports: CacheSpec[] = (c?.Imports ?? []).map((e) => ({ type: e.Type, attrs: { ...e.Attrs } }));
  if (c && c.ExportRefDeprecated !== '') exports.push({ type: 'registry', attrs: { ...c.ExportAttrsDeprecated, ref: c.ExportRefDeprecated } });
  for (const ref of c?.ImportRefsDeprecated ?? []) imports.push({ type: 'registry', attrs: { ref } });
  return { exports, imports };
}

function usageRecord(e: DiskUsageEntry): UsageRecord {
  const r: UsageRecord = {
    ID: e.id,
    Mutable: e.mutable,
    InUse: e.inUse,
    Size: e.size,
    Parent: '',
    UsageCount: BigInt(e.usageCount),
    Description: e.description,
    RecordType: e.recordType,
    Shared: e.shared,
    Parents: e.parents,
  };
  if (e.createdAt) r.CreatedAt = e.createdAt;
  if (e.lastUsedAt) r.LastUsedAt = e.lastUsedAt;
  return r;
}

function metadataValues(md: Metadata, key: string): string[] {
  return md
    .get(key)
    .map((v) => (typeof v === 'string' ? v : v.toString('utf8')))
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

export function controlService(deps: ServerDeps): ControlServer {
  const { backend, jobs, sessions } = deps;

  async function solve(call: { request: SolveRequest }, cancelled: AbortSignal) {
    const req = call.request;
    const ref = req.Ref !== '' ? req.Ref : randomUUID();
    const job = jobs.ensure(ref);
    if (job.started) throw new GrpcStatusError(GrpcStatus.ALREADY_EXISTS, `build ${ref} is already running`);
    const onCancel = () => job.abort.abort(new ObdkitError('ECANCELED', 'build cancelled by the client', { ref }));
    if (cancelled.aborted) onCancel();
    else cancelled.addEventListener('abort', onCancel, { once: true });
    const cache = cacheOptions(req);
    const ctx: BuildContext = {
      ref,
      session: new RemoteBuildSession(req.Session, sessions, job.abort.signal),
      progress: job.progress,
      signal: job.abort.signal,
      entitlements: [...req.Entitlements],
      solveAttrs: { ...req.FrontendAttrs },
      exporters: normalizeExporters(req),
      cacheExports: cache.exports,
      cacheImports: cache.imports,
    };
    job.inputs = req.FrontendInputs;
    job.start(ctx);
    log.info({ ref, frontend: req.Frontend || '(gateway)', exporters: ctx.exporters.map((e) => e.type) }, 'build started');
    try {
      let result: FrontendResult;
      if (req.Definition && req.Definition.def.length > 0) {
        throw unimplemented('building raw LLB definitions');
      } else if (req.Frontend !== '') {
        const fr = frontendRequest(req.Frontend, req.FrontendAttrs, cache.imports, Object.keys(req.FrontendInputs));
        result = await backend.solve(fr, ctx);
      } else {
        const returned = await job.waitReturned();
        if ('error' in returned) {
          const st = returned.error;
          throw new GrpcStatusError(st.code === 0 ? GrpcStatus.UNKNOWN : st.code, st.message, st);
        }
        result = returned.result;
      }
      let exporterResponse: Record<string, string> = {};
      if (ctx.exporters.length > 0) exporterResponse = await backend.export(result, ctx);
      // Progress must end before the answer: older clients fail a build whose Status outlives Solve.
      jobs.finish(job);
      log.info({ ref }, 'build finished');
      return { ExporterResponse: exporterResponse };
    } catch (err) {
      const se = toServiceError(err);
      jobs.finish(job, se.details);
      log.info({ ref, err: se.details }, 'build failed');
      throw err;
    } finally {
      cancelled.removeEventListener('abort', onCancel);
      if (backend.release) await backend.release(ref).catch((e: unknown) => log.warn({ ref, err: String(e) }, 'release failed'));
    }
  }

  function status(call: ServerWritableStream<StatusRequest, StatusResponse>): void {
    const job = jobs.ensure(call.request.Ref);
    const md = new Metadata();
    md.set('buildkit-current-timestamp', new Date().toISOString());
    call.sendMetadata(md);
    let done = false;
    const unsubscribe = job.progress.subscribe((update) => {
      if (done) return;
      if (update === null) {
        done = true;
        call.end();
        return;
      }
      call.write(update);
    });
    call.on('cancelled', () => {
      done = true;
      unsubscribe();
    });
  }

  function session(call: ServerDuplexStream<BytesMessage, BytesMessage>): void {
    const id = metadataValues(call.metadata, SESSION_UUID)[0];
    if (id === undefined) {
      call.emit('error', { code: GrpcStatus.INVALID_ARGUMENT, details: `${SESSION_UUID} header missing` });
      return;
    }
    const sharedKey = metadataValues(call.metadata, SESSION_SHAREDKEY)[0] ?? '';
    const methods = metadataValues(call.metadata, SESSION_METHODS);
    // The client drops the tunnel unless our HTTP/2 preface arrives within 10 s: connect right away.
    const tunnel = new SessionTunnel(call);
    const client = new SessionClient(id, sharedKey, methods, tunnel);
    sessions.add(client);
    monitorSession(client);
    log.debug({ session: id, methods: methods.length }, 'session opened');
    call.on('cancelled', () => client.destroy());
    void client.closed.then(() => {
      tunnel.end();
      log.debug({ session: id }, 'session closed');
    });
  }

  async function prune(call: ServerWritableStream<PruneRequest, UsageRecord>): Promise<void> {
    try {
      if (backend.prune) {
        const r = call.request;
        for await (const e of backend.prune({ all: r.all, filters: r.filter, keepDurationNs: r.keepDuration, reservedSpace: r.reservedSpace })) {
          if (call.cancelled) return;
          call.write(usageRecord(e));
        }
      }
      call.end();
    } catch (err) {
      call.emit('error', toServiceError(err));
    }
  }

  function listenBuildHistory(call: ServerWritableStream<BuildHistoryRequest, BuildHistoryEvent>): void {
    // No build records are kept. With EarlyExit (buildx's feature probe and provenance lookup) the answer
    // is "nothing matches" at once; a plain listener stays open until it hangs up.
    if (call.request.EarlyExit) {
      call.end();
      return;
    }
    call.on('cancelled', () => undefined);
  }

  return {
    listWorkers: unaryHandler('ListWorkers', async () => ({ record: [deps.worker] })),
    info: unaryHandler('Info', async () => ({ buildkitVersion: deps.version })),
    diskUsage: unaryHandler('DiskUsage', async (call) => ({
      record: backend.diskUsage ? (await backend.diskUsage(call.request.filter)).map(usageRecord) : [],
    })),
    prune: (call) => void prune(call),
    solve: unaryHandler('Solve', solve),
    status,
    session,
    listenBuildHistory,
    updateBuildHistory: unaryHandler('UpdateBuildHistory', async () => {
      throw unimplemented('build history');
    }),
  };
}
