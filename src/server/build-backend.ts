// The BuildBackend `obdkit serve` runs: dockerfile.v0 requests built for real on the shared build
// orchestration (src/build). Per request it fetches the Dockerfile (and `.dockerignore`) through the
// client's FileSync into a work dir under the state root, answers `requestid` subrequests from the
// frontend, or converts and solves, fetching the build context on first use. Secrets and registry
// credentials come from the client's session; solver progress, layer sizes and fetch statuses go to the
// build's Status stream. Results are kept by id until the build is released, so `export` (or a gateway
// client's Return) can name them. One BuildService serves every build: concurrent builds share the
// solver, which runs identical steps once. An image exporter that pushes starts uploading layers while
// the build runs (one EarlyLayerPush per build and exporter, fed by the solve's sealed layers, finished
// by the export, closed when the build is released); the manifest is only ever pushed by the export.
import { randomUUID } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServeOptions } from '../cli/serve.js';
import { hostPlatform, parseDockerignore, parsePlatform, runSubrequest } from '../../frontend/index.js';
import {
  BuildService,
  FetchedContexts,
  assembleBuilt,
  exportToRegistry,
  parseOutput,
  runBuild,
  withRootfs,
  writeImageArchive,
  writeRootfs,
  type BuildHooks,
  type BuiltImage,
  type OutputSpec,
} from '../build/index.js';
import type { Platform } from '../solver/ops.js';
import type { ProgressEvent } from '../solver/solver.js';
import type { CredentialProvider } from '../registry/credentials.js';
import { resolveImage } from '../registry/pull.js';
import { parseReference } from '../registry/reference.js';
import type { ExportImage } from '../exporter/image.js';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import { describeLayer, humanBytes } from '../../worker/build/progress.js';
import {
  BuildFailure,
  type BuildBackend,
  type BuildContext,
  type BuildSession,
  type FrontendRequest,
  type FrontendResult,
  type VertexHandle,
} from './backend.js';
import { solverProgress } from './solver-progress.js';
import { feedEarlyPush, startEarlyPush } from '../build/outputs.js';
import type { EarlyLayerPush } from '../exporter/early-push.js';

interface HeldResult {
  buildRef: string;
  built: BuiltImage;
}

/** Client-side secrets, read on demand through the session. */
function sessionSecrets(session: BuildSession): { get(id: string): Promise<Buffer | undefined> } {
  return { get: (id) => session.getSecret(id) };
}

/** The session's Auth service as a credential provider; empty answers mean "ask the next source". */
function sessionCredentials(session: BuildSession): CredentialProvider {
  return async (host) => {
    try {
      const c = await session.credentials(host);
      return c.username || c.secret ? { username: c.username, password: c.secret } : undefined;
    } catch (err) {
      log.debug({ host, err: String(err) }, 'session credentials unavailable');
      return undefined;
    }
  };
}

/** Wraps a file in a byte stream for FileSend. */
async function* fileBytes(path: string): AsyncGenerator<Uint8Array> {
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) yield chunk as Buffer;
}

export class ObdkitBuildBackend implements BuildBackend {
  private readonly results = new Map<string, HeldResult>();
  private readonly workDirs = new Map<string, string>();
  /** Early layer uploads by build ref, then by exporter index. */
  private readonly earlyPushes = new Map<string, Map<number, EarlyLayerPush>>();

  constructor(readonly service: BuildService) {}

  /** The work dir of build `ref` (Dockerfile, contexts, archives), removed when the build is released. */
  private async workDir(ref: string): Promise<string> {
    let d = this.workDirs.get(ref);
    if (!d) {
      d = join(this.service.store.workDir, 'builds', randomUUID());
      this.workDirs.set(ref, d);
    }
    await mkdir(d, { recursive: true });
    return d;
  }

  async solve(req: FrontendRequest, ctx: BuildContext): Promise<FrontendResult> {
    if (req.frontend !== 'dockerfile.v0') throw new BuildFailure(`frontend ${req.frontend} is not supported by obdkit`, 12);
    const attrs = { ...ctx.solveAttrs, ...req.attrs };
    const dir = join(await this.workDir(ctx.ref), `solve-${randomUUID().slice(0, 8)}`);
    await mkdir(dir, { recursive: true });
    const filename = attrs['filename'] || 'Dockerfile';
    const dockerfileKey = attrs['dockerfilekey'] || 'dockerfile';
    const contextKey = attrs['contextkey'] || 'context';
    const buildArgs: Record<string, string> = {};
    const labels: Record<string, string> = {};
    for (const [k, v] of Object.entries(attrs)) {
      if (k.startsWith('build-arg:')) buildArgs[k.slice('build-arg:'.length)] = v;
      else if (k.startsWith('label:')) labels[k.slice('label:'.length)] = v;
    }
    const platform = this.platformOf(attrs['platform']);
    const target = attrs['target'] || undefined;

    const dfVertex = ctx.progress.vertex(`[internal] load build definition from ${filename}`);
    let dockerfile: string;
    let excludes: string[];
    try {
      const dfDir = join(dir, 'dockerfile');
      const sent = await ctx.session.syncDir({
        dirName: dockerfileKey,
        dest: dfDir,
        followPaths: [filename, `${filename}.dockerignore`],
        onProgress: (b) => dfVertex.status('transferring dockerfile:', b),
      });
      dfVertex.status('transferring dockerfile:', sent.bytes, 0, true);
      try {
        dockerfile = await readFile(join(dfDir, filename), 'utf8');
      } catch (err) {
        throw new ObdkitError('EDOCKERFILE', `failed to read dockerfile: ${(err as Error).message}`, { file: filename });
      }
      dfVertex.complete();
    } catch (err) {
      dfVertex.complete((err as Error).message);
      throw err;
    }

    if (req.requestId !== undefined) {
      const r = await runSubrequest(req.requestId, dockerfile, {
        filename,
        ...(target ? { target } : {}),
        buildArgs,
        ...(platform ? { targetPlatform: platform } : {}),
      });
      const metadata: Record<string, Buffer> = {};
      for (const [k, v] of Object.entries(r.metadata)) metadata[k] = Buffer.from(v);
      return { ref: '', metadata };
    }

    excludes = await this.loadDockerignore(ctx, dir, filename, contextKey);

    // The transfer is shown as the context's own step: the solver's vertex for the same local source
    // would only repeat its name with nothing under it.
    const shownContexts = new Set<string>();
    const contexts = new FetchedContexts(
      join(dir, 'contexts'),
      async (name, dest, ex) => {
        const key = name === 'context' ? contextKey : name;
        const title = `[internal] load build context${name === 'context' ? '' : ` ${name}`}`;
        shownContexts.add(title);
        const v = ctx.progress.vertex(title);
        try {
          const r = await ctx.session.syncDir({ dirName: key, dest, excludePatterns: ex, onProgress: (b) => v.status('transferring context:', b) });
          v.status('transferring context:', r.bytes, 0, true);
          v.complete();
        } catch (err) {
          v.complete((err as Error).message);
          throw err;
        }
      },
      excludes,
    );
    const pushes = this.startEarlyPushes(ctx);
    const toStatus = solverProgress(ctx.progress);
    const feed = (e: ProgressEvent): void => {
      if (!shownContexts.has(e.name)) toStatus(e);
    };
    const hooks: BuildHooks = {
      contexts,
      secrets: sessionSecrets(ctx.session),
      credentials: sessionCredentials(ctx.session),
      progress: feed,
      signal: ctx.signal,
      onWarning: (w) => dfVertex.warn(w),
      onLayer: (v, o) => {
        const e: ProgressEvent = { type: 'log', vertex: v.id, name: v.name, inputs: v.inputs, key: '', time: new Date(), stream: 1, data: Buffer.from(describeLayer(o)) };
        feed(e);
        for (const early of pushes.values()) feedEarlyPush(this.service.store, early, o);
      },
      onImageLookup: async <T>(ref: string, _p: Platform, lookup: () => Promise<T>): Promise<T> => {
        const v = ctx.progress.vertex(`[internal] load metadata for ${ref}`);
        try {
          const r = await lookup();
          v.complete();
          return r;
        } catch (err) {
          v.complete((err as Error).message);
          throw err;
        }
      },
    };
    const noCacheAttr = attrs['no-cache'];
    const noCache: boolean | string[] =
      noCacheAttr === undefined ? false : noCacheAttr === '' ? true : noCacheAttr.split(',').map((s) => s.trim()).filter(Boolean);
    let built: BuiltImage;
    try {
      built = await runBuild(
        this.service,
        {
          dockerfile,
          filename,
          ...(target ? { target } : {}),
          buildArgs,
          labels,
          ...(platform ? { platform } : {}),
          noCache,
          excludes,
          contextName: 'context',
        },
        hooks,
      );
    } catch (err) {
      // No export follows a failed solve: stop uploading its layers (no manifest was pushed).
      await this.closeEarlyPushes(ctx.ref);
      if (ctx.signal.aborted) throw ctx.signal.reason;
      throw new BuildFailure(err instanceof Error ? err.message : String(err));
    } finally {
      contexts.close();
    }
    const id = `obdkit-${randomUUID()}`;
    this.results.set(id, { buildRef: ctx.ref, built });
    const image = assembleBuilt(this.service, built, true);
    return { ref: id, metadata: { 'containerimage.config': image.config } };
  }

  /**
   * Early layer uploads for the build's image exporters that push (made once per build; a gateway
   * client may solve several times). An exporter that does not parse is left to the export to report.
   */
  private startEarlyPushes(ctx: BuildContext): Map<number, EarlyLayerPush> {
    let pushes = this.earlyPushes.get(ctx.ref);
    if (pushes) return pushes;
    pushes = new Map();
    this.earlyPushes.set(ctx.ref, pushes);
    const credentials = sessionCredentials(ctx.session);
    for (const e of ctx.exporters) {
      let spec: OutputSpec;
      try {
        spec = parseOutput(e.type, e.attrs);
      } catch {
        continue;
      }
      if (spec.type !== 'image') continue;
      const early = startEarlyPush(this.service, spec, credentials);
      if (early) pushes.set(e.index, early);
    }
    return pushes;
  }

  private async closeEarlyPushes(ref: string): Promise<void> {
    const pushes = this.earlyPushes.get(ref);
    this.earlyPushes.delete(ref);
    if (pushes) await Promise.all([...pushes.values()].map((p) => p.close()));
  }

  private platformOf(spec: string | undefined): Platform | undefined {
    if (!spec) return undefined;
    const list = spec.split(',').map((s) => s.trim()).filter(Boolean);
    if (list.length > 1) throw new BuildFailure(`multi-platform builds are not supported (asked for ${list.join(', ')})`, 12);
    try {
      return list[0] ? parsePlatform(list[0]) : undefined;
    } catch (err) {
      throw new BuildFailure((err as Error).message, 3);
    }
  }

  /** `<Dockerfile>.dockerignore` beside the Dockerfile wins; else `.dockerignore` at the context root. */
  private async loadDockerignore(ctx: BuildContext, dir: string, filename: string, contextKey: string): Promise<string[]> {
    const beside = join(dir, 'dockerfile', `${filename}.dockerignore`);
    if (existsSync(beside)) return parseDockerignore(await readFile(beside, 'utf8'));
    const v = ctx.progress.vertex('[internal] load .dockerignore');
    try {
      const dest = join(dir, 'dockerignore');
      const r = await ctx.session.syncDir({ dirName: contextKey, dest, includePatterns: ['.dockerignore'], followPaths: ['.dockerignore'] });
      v.status('transferring context:', r.bytes, 0, true);
      v.complete();
      const f = join(dest, '.dockerignore');
      return existsSync(f) ? parseDockerignore(await readFile(f, 'utf8')) : [];
    } catch (err) {
      v.complete((err as Error).message);
      throw err;
    }
  }

  async export(result: FrontendResult, ctx: BuildContext): Promise<Record<string, string>> {
    const id = result.ref ?? Object.values(result.refs ?? {})[0];
    if (!id) return {};
    const held = this.results.get(id);
    if (!held) throw new BuildFailure(`result ${id} is not known to this daemon (released or from another build)`, 5);
    const built = held.built;
    const dir = await this.workDir(ctx.ref);
    const credentials = sessionCredentials(ctx.session);
    const response: Record<string, string> = {};
    const describe = (image: ExportImage): void => {
      const d = image.manifestDescriptor;
      response['containerimage.digest'] = d.digest;
      response['containerimage.config.digest'] = image.configDescriptor.digest;
      response['containerimage.descriptor'] = Buffer.from(JSON.stringify({ mediaType: d.mediaType, digest: d.digest, size: d.size })).toString('base64');
    };
    for (const e of ctx.exporters) {
      let spec: OutputSpec;
      try {
        spec = parseOutput(e.type, e.attrs);
      } catch (err) {
        throw new BuildFailure((err as Error).message, 3);
      }
      const note = (v: VertexHandle): void => {
        const asked = spec.ignored.length ? ` (${spec.ignored.join(', ')} does not apply)` : '';
        v.log(`layers are overlaybd blobs (LSMT in ZFile), whatever the output's compression settings${asked}\n`);
      };
      await this.step(ctx, e.type === 'local' ? 'copying files' : e.type === 'tar' ? 'sending tarball' : `exporting to ${e.type === 'oci' || e.type === 'docker' ? `${e.type} image format` : 'image'}`, async (v) => {
        switch (spec.type) {
          case 'image': {
            note(v);
            v.status('exporting layers', 0, 0, true);
            const early = this.earlyPushes.get(ctx.ref)?.get(e.index);
            const { image, pushed } = await exportToRegistry(this.service, built, spec, credentials, early);
            v.status(`exporting manifest ${image.manifestDescriptor.digest}`, 0, 0, true);
            v.status(`exporting config ${image.configDescriptor.digest}`, 0, 0, true);
            for (const p of pushed) v.status(`pushing ${p.name} with overlaybd layers`, 0, 0, true);
            for (const l of image.layers) v.log(`layer ${l.descriptor.digest} ${humanBytes(l.descriptor.size)}\n`);
            describe(image);
            if (spec.names.length) response['image.name'] = spec.names.join(',');
            break;
          }
          case 'oci':
          case 'docker': {
            note(v);
            const file = join(dir, `export-${e.index}.tar`);
            try {
              const image = await writeImageArchive(this.service, built, spec, file, credentials);
              v.status(`exporting manifest ${image.manifestDescriptor.digest}`, 0, 0, true);
              const n = await ctx.session.sendFile(e.index, fileBytes(file));
              v.status('sending tarball', n, n, true);
              describe(image);
              if (spec.names.length) response['image.name'] = spec.names.join(',');
            } finally {
              await rm(file, { force: true });
            }
            break;
          }
          case 'tar': {
            const file = join(dir, `export-${e.index}.tar`);
            try {
              await writeRootfs(this.service, built, 'tar', file);
              const n = await ctx.session.sendFile(e.index, fileBytes(file));
              v.status('sending tarball', n, n, true);
            } finally {
              await rm(file, { force: true });
            }
            break;
          }
          case 'local': {
            const sent = await withRootfs(this.service, built, (rootfs) => ctx.session.sendDir(e.index, rootfs));
            v.status('copying files', sent.bytes, sent.bytes, true);
            break;
          }
        }
      });
    }
    return response;
  }

  /** Runs one export step as a progress vertex; failures end it with their message. */
  private async step(ctx: BuildContext, name: string, fn: (v: VertexHandle) => Promise<void>): Promise<void> {
    const v = ctx.progress.vertex(name);
    try {
      await fn(v);
      v.complete();
    } catch (err) {
      v.complete((err as Error).message);
      if (ctx.signal.aborted) throw ctx.signal.reason;
      throw err instanceof BuildFailure ? err : new BuildFailure((err as Error).message);
    }
  }

  async release(ref: string): Promise<void> {
    await this.closeEarlyPushes(ref);
    for (const [id, r] of this.results) if (r.buildRef === ref) this.results.delete(id);
    const d = this.workDirs.get(ref);
    this.workDirs.delete(ref);
    if (d) await rm(d, { recursive: true, force: true });
  }

  async resolveImageConfig(
    ref: string,
    opts: { platform?: { os: string; architecture: string; variant: string } },
    ctx: BuildContext,
  ): Promise<{ digest: string; config: Buffer; ref: string }> {
    const client = this.service.registryClient(sessionCredentials(ctx.session));
    try {
      const p = opts.platform;
      const platform: Platform = p?.architecture ? { os: p.os || 'linux', architecture: p.architecture, ...(p.variant ? { variant: p.variant } : {}) } : hostPlatform();
      const img = await resolveImage(client, parseReference(ref), platform);
      return { digest: img.manifestDigest, config: img.configBytes, ref };
    } finally {
      await client.close();
    }
  }

  async close(): Promise<void> {
    await this.service.close();
  }
}

/** The factory `obdkit serve` calls: one BuildService under `--root`, registry settings from the config. */
export async function makeBackend(opts: ServeOptions): Promise<ObdkitBuildBackend> {
  const regs: Record<string, { http?: boolean; insecure?: boolean; ca?: string[] }> = {};
  for (const [host, r] of Object.entries(opts.config.registries)) {
    regs[host] = { http: r.http, insecure: r.insecure, ca: r.ca };
    if (r.mirrors.length) log.warn({ host, mirrors: r.mirrors }, 'registry mirrors are not used yet: pulls go to the registry itself');
  }
  if (opts.config.worker.device !== 'fuse') throw new ObdkitError('ECONFIG', `worker.device = "${opts.config.worker.device}" is not available here; use "fuse"`, { field: 'worker.device' });
  const service = await BuildService.open({ root: opts.root, maxParallelism: opts.config.worker.maxParallelism, registries: regs });
  // Work dirs of builds a previous daemon did not finish: nothing can name them any more.
  await rm(join(service.store.workDir, 'builds'), { recursive: true, force: true });
  return new ObdkitBuildBackend(service);
}
