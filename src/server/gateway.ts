// The LLBBridge gateway on the main port. buildx and buildctl drive every build through it: Ping reads our
// capabilities, Solve{Frontend: dockerfile.v0} runs the frontend (through the backend) and returns result
// refs, and Return hands the final result back to the waiting Control.Solve (control.ts). Each call names
// its build with metadata `buildkit-controlapi-buildid`; calls may arrive before that build's Solve.
import { status as GrpcStatus, type Metadata } from '@grpc/grpc-js';
import type { BuildBackend, BuildContext, FileEntryStat, FrontendResult } from './backend.js';
import { frontendCaps, llbCaps } from './caps.js';
import { frontendRequest, type ServerDeps } from './control.js';
import type { LLBBridgeServer, Result } from './gen/buildkit/gateway.js';
import type { Stat } from './gen/fsutil/stat.js';
import { GrpcStatusError, unimplemented } from './grpc-errors.js';
import { unaryHandler } from './handlers.js';
import type { Job } from './jobs.js';

export const BUILD_ID_HEADER = 'buildkit-controlapi-buildid';

function toStat(e: FileEntryStat): Stat {
  return {
    path: e.path,
    mode: e.mode >>> 0,
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    modTime: e.modTimeNs,
    linkname: e.linkname,
    devmajor: 0n,
    devminor: 0n,
    xattrs: {},
  };
}

export function resultToProto(r: FrontendResult): Result {
  const out: Result = { metadata: { ...r.metadata }, attestations: {} };
  if (r.refs !== undefined) {
    out.refs = { refs: Object.fromEntries(Object.entries(r.refs).map(([k, id]) => [k, { id }])) };
  } else {
    out.ref = { id: r.ref ?? '' };
  }
  return out;
}

export function resultFromProto(r: Result | undefined): FrontendResult {
  const metadata: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(r?.metadata ?? {})) metadata[k] = Buffer.from(v);
  if (r?.refs !== undefined) return { refs: Object.fromEntries(Object.entries(r.refs.refs).map(([k, v]) => [k, v.id])), metadata };
  if (r?.refsDeprecated !== undefined) return { refs: { ...r.refsDeprecated.refs }, metadata };
  if (r?.ref !== undefined) return { ref: r.ref.id, metadata };
  return { ref: r?.refDeprecated ?? '', metadata };
}

export function gatewayService(deps: ServerDeps): LLBBridgeServer {
  const { backend, jobs } = deps;

  async function jobFor(call: { metadata: Metadata }, signal: AbortSignal): Promise<{ job: Job; ctx: BuildContext }> {
    const raw = call.metadata.get(BUILD_ID_HEADER)[0];
    const id = typeof raw === 'string' ? raw : raw?.toString('utf8');
    if (!id) throw new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, `no ${BUILD_ID_HEADER} in the request metadata`);
    const job = await jobs.waitStarted(id, signal);
    if (job.finished) throw new GrpcStatusError(GrpcStatus.FAILED_PRECONDITION, `build ${id} has already finished`);
    return { job, ctx: job.ctx! };
  }

  /** The build's context with a signal that also fires when this one call is cancelled. */
  function callCtx(ctx: BuildContext, signal: AbortSignal): BuildContext {
    return { ...ctx, signal: AbortSignal.any([ctx.signal, signal]) };
  }

  function need<K extends keyof BuildBackend>(name: K, what: string): NonNullable<BuildBackend[K]> {
    const fn = backend[name];
    if (!fn) throw unimplemented(what);
    return fn.bind(backend) as NonNullable<BuildBackend[K]>;
  }

  const implemented = (['readDir', 'statFile', 'resolveImageConfig'] as const).filter((k) => backend[k] !== undefined);

  return {
    ping: unaryHandler('Ping', async (call, signal) => {
      await jobFor(call, signal);
      return { FrontendAPICaps: frontendCaps(implemented), LLBCaps: llbCaps(), Workers: [deps.worker] };
    }),

    solve: unaryHandler('LLBBridge.Solve', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const req = call.request;
      if (req.Definition && req.Definition.def.length > 0) throw unimplemented('building raw LLB definitions');
      let result: FrontendResult;
      if (req.Frontend === '') {
        result = { ref: '', metadata: {} };
      } else {
        const cacheImports = req.CacheImports.map((c) => ({ type: c.Type, attrs: { ...c.Attrs } }));
        const fr = frontendRequest(req.Frontend, req.FrontendOpt, cacheImports, Object.keys(req.FrontendInputs));
        result = await backend.solve(fr, callCtx(ctx, signal));
      }
      const proto = resultToProto(result);
      return req.allowResultReturn ? { ref: '', result: proto } : { ref: result.ref ?? '', result: proto };
    }),

    return: unaryHandler('Return', async (call, signal) => {
      const { job } = await jobFor(call, signal);
      const req = call.request;
      const accepted =
        req.error !== undefined && req.error.code !== 0
          ? job.setReturned({ error: req.error })
          : job.setReturned({ result: resultFromProto(req.result) });
      if (!accepted) throw new GrpcStatusError(GrpcStatus.FAILED_PRECONDITION, `build ${job.ref} already returned a result`);
      return {};
    }),

    inputs: unaryHandler('Inputs', async (call, signal) => {
      const { job } = await jobFor(call, signal);
      return { Definitions: job.inputs };
    }),

    readFile: unaryHandler('ReadFile', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const r = call.request;
      const range = r.Range ? { offset: Number(r.Range.Offset), length: Number(r.Range.Length) } : undefined;
      return { Data: await need('readFile', 'reading files from results')(r.Ref, r.FilePath, range, callCtx(ctx, signal)) };
    }),

    readDir: unaryHandler('ReadDir', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const r = call.request;
      const entries = await need('readDir', 'listing directories of results')(r.Ref, r.DirPath, r.IncludePattern, callCtx(ctx, signal));
      return { entries: entries.map(toStat) };
    }),

    statFile: unaryHandler('StatFile', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const r = call.request;
      return { stat: toStat(await need('statFile', 'stat of files in results')(r.Ref, r.Path, callCtx(ctx, signal))) };
    }),

    resolveImageConfig: unaryHandler('ResolveImageConfig', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const r = call.request;
      const opts: { platform?: { os: string; architecture: string; variant: string }; resolveMode: string } = { resolveMode: r.ResolveMode };
      if (r.Platform) opts.platform = { os: r.Platform.OS, architecture: r.Platform.Architecture, variant: r.Platform.Variant };
      const res = await need('resolveImageConfig', 'resolving image configs')(r.Ref, opts, callCtx(ctx, signal));
      return { Digest: res.digest, Config: res.config, Ref: res.ref };
    }),

    resolveSourceMeta: unaryHandler('ResolveSourceMeta', async (call, signal) => {
      const { ctx } = await jobFor(call, signal);
      const r = call.request;
      const src = r.Source;
      if (src && src.identifier.startsWith('docker-image://') && backend.resolveImageConfig) {
        const opts: { platform?: { os: string; architecture: string; variant: string }; resolveMode: string } = { resolveMode: r.ResolveMode };
        if (r.Platform) opts.platform = { os: r.Platform.OS, architecture: r.Platform.Architecture, variant: r.Platform.Variant };
        const res = await backend.resolveImageConfig(src.identifier.slice('docker-image://'.length), opts, callCtx(ctx, signal));
        return { Source: src, Image: { Digest: res.digest, Config: res.config } };
      }
      if (!src) throw new GrpcStatusError(GrpcStatus.INVALID_ARGUMENT, 'no source given');
      return { Source: src };
    }),

    evaluate: unaryHandler('Evaluate', async (call, signal) => {
      // Results are complete when Solve answers; nothing is left to evaluate.
      await jobFor(call, signal);
      return {};
    }),

    warn: unaryHandler('Warn', async (call, signal) => {
      const { job } = await jobFor(call, signal);
      const r = call.request;
      job.progress.write({
        warnings: [{ vertex: r.digest, level: r.level, short: r.short, detail: r.detail, url: r.url, ranges: r.ranges, ...(r.info ? { info: r.info } : {}) }],
      });
      return {};
    }),
  };
}
