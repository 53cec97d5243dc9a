// The seam the build pipeline plugs into, exercised for real: a BuildBackend that does what the pipeline's
// first steps do (fetch the Dockerfile dir and the build context through FileSync, read secrets, report
// vertexes with logs) and then answers a fixed image digest instead of building. Tests drive it with the
// real buildctl and buildx clients and inspect what it recorded.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import {
  BuildFailure,
  type BuildBackend,
  type BuildContext,
  type FrontendRequest,
  type FrontendResult,
} from '../../src/server/backend.js';

/** tar-stream's Pack yields untyped chunks; check each is bytes. */
async function* bytesOf(source: AsyncIterable<unknown>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    if (!(chunk instanceof Uint8Array)) throw new TypeError('tar stream produced a non-byte chunk');
    yield chunk;
  }
}

export const FAKE_DIGEST = 'sha256:' + 'ab'.repeat(32);

export interface RecordedBuild {
  ref: string;
  attrs: Record<string, string>;
  requestId?: string;
  dockerfileDir: string;
  contextDir: string;
  dockerfile?: string;
  secrets: Record<string, string | null>;
  exporters: { type: string; attrs: Record<string, string> }[];
  /** Set when the build's AbortSignal fired. */
  aborted: boolean;
  abortReason?: string;
  exported: boolean;
  credentials?: { username: string; secret: string };
  token?: { token: string; expiresInSeconds: number } | null;
  /** Set while the build blocks waiting for cancellation (the `hang` option). */
  hanging?: boolean;
}

export interface ContextFetchBackendOptions {
  workDir: string;
  /** Secret ids to read through the session. */
  secretIds?: string[];
  /** Fail every build with this message after fetching the context. */
  failWith?: string;
  /** Ask the client for registry credentials and a bearer token for this host. */
  auth?: { host: string; realm: string; service: string; scopes: string[] };
  /** Block after fetching the context until the build is cancelled. */
  hang?: boolean;
}

export class ContextFetchBackend implements BuildBackend {
  readonly builds: RecordedBuild[] = [];
  private readonly waiters: ((b: RecordedBuild) => void)[] = [];
  private seq = 0;

  constructor(private readonly opts: ContextFetchBackendOptions) {}

  /** Resolves when a build reaches the hang point (or immediately if one already has). */
  whenHanging(): Promise<RecordedBuild> {
    const b = this.builds.find((x) => x.hanging);
    if (b) return Promise.resolve(b);
    return new Promise((resolve, reject) => {
      // A build that fails before hanging must not leave the test waiting forever.
      const t = setTimeout(() => reject(new Error('no build reached the hang point')), 120_000);
      this.waiters.push((rec) => {
        clearTimeout(t);
        resolve(rec);
      });
    });
  }

  async solve(req: FrontendRequest, ctx: BuildContext): Promise<FrontendResult> {
    const n = this.seq++;
    const rec: RecordedBuild = {
      ref: ctx.ref,
      attrs: req.attrs,
      ...(req.requestId !== undefined ? { requestId: req.requestId } : {}),
      dockerfileDir: '',
      contextDir: '',
      secrets: {},
      exporters: ctx.exporters.map((e) => ({ type: e.type, attrs: e.attrs })),
      aborted: false,
      exported: false,
    };
    this.builds.push(rec);
    ctx.signal.addEventListener(
      'abort',
      () => {
        rec.aborted = true;
        rec.abortReason = String((ctx.signal.reason as Error | undefined)?.message ?? ctx.signal.reason);
      },
      { once: true },
    );
    if (req.requestId === 'frontend.outline') {
      return { ref: '', metadata: { 'result.json': Buffer.from('{"name":"","args":[]}'), 'result.txt': Buffer.from('no args\n'), version: Buffer.from('1.0.0') } };
    }
    const filename = req.attrs['filename'] ?? 'Dockerfile';
    const root = join(this.opts.workDir, `build-${n}`);
    rec.dockerfileDir = join(root, 'dockerfile');
    const v1 = ctx.progress.vertex(`[internal] load build definition from ${filename}`);
    const df = await ctx.session.syncDir({
      dirName: req.attrs['dockerfilekey'] ?? 'dockerfile',
      dest: rec.dockerfileDir,
      followPaths: [filename, `${filename}.dockerignore`],
      onProgress: (b) => v1.status('transferring dockerfile:', b),
    });
    v1.status('transferring dockerfile:', df.bytes, 0, true);
    rec.dockerfile = await readFile(join(rec.dockerfileDir, filename), 'utf8');
    v1.log(`dockerfile has ${rec.dockerfile.split('\n').length} lines\n`);
    v1.complete();

    const v2 = ctx.progress.vertex('[internal] load build context');
    rec.contextDir = join(root, 'context');
    await mkdir(rec.contextDir, { recursive: true });
    const cx = await ctx.session.syncDir({
      dirName: req.attrs['contextkey'] ?? 'context',
      dest: rec.contextDir,
      onProgress: (b) => v2.status('transferring context:', b),
    });
    v2.status('transferring context:', cx.bytes, 0, true);
    v2.log(`received ${cx.files} files, ${cx.bytes} bytes\n`);
    v2.complete();

    for (const id of this.opts.secretIds ?? []) {
      const s = await ctx.session.getSecret(id);
      rec.secrets[id] = s === undefined ? null : s.toString('utf8');
    }

    if (this.opts.auth) {
      const a = this.opts.auth;
      rec.credentials = await ctx.session.credentials(a.host);
      const t = await ctx.session.fetchToken(a);
      rec.token = t ? { token: t.token, expiresInSeconds: t.expiresInSeconds } : null;
    }

    const v3 = ctx.progress.vertex('[1/1] RUN echo pretend-build');
    v3.log('pretend-build output line\n');
    if (this.opts.failWith !== undefined) {
      v3.complete(this.opts.failWith);
      throw new BuildFailure(this.opts.failWith);
    }
    if (this.opts.hang) {
      rec.hanging = true;
      for (const w of this.waiters.splice(0)) w(rec);
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      throw ctx.signal.reason;
    }
    v3.complete();
    return { ref: `result-${n}`, metadata: { 'containerimage.config': Buffer.from('{}') } };
  }

  async export(result: FrontendResult, ctx: BuildContext): Promise<Record<string, string>> {
    const rec = this.builds.find((b) => b.ref === ctx.ref && b.requestId === undefined);
    if (rec) rec.exported = true;
    for (const e of ctx.exporters) {
      if (e.type === 'local' && rec) {
        const v = ctx.progress.vertex('copying files');
        const sent = await ctx.session.sendDir(e.index, rec.contextDir);
        v.log(`sent ${sent.files} files\n`);
        v.complete();
      } else if (e.type === 'tar' && rec) {
        const v = ctx.progress.vertex('sending tarball');
        const pack = tarStream.pack();
        pack.entry({ name: 'Dockerfile', mode: 0o644 }, rec.dockerfile ?? '');
        pack.entry({ name: 'hello.txt', mode: 0o600 }, 'hello from the backend\n');
        pack.finalize();
        await ctx.session.sendFile(e.index, bytesOf(pack));
        v.complete();
      }
    }
    const v = ctx.progress.vertex('exporting to image');
    v.status(`exporting manifest ${FAKE_DIGEST}`, 0, 0, true);
    v.complete();
    const out: Record<string, string> = { 'containerimage.digest': FAKE_DIGEST, 'obdkit.test.result': result.ref ?? '' };
    const name = ctx.exporters.find((e) => e.type === 'image')?.attrs['name'];
    if (name) out['image.name'] = name;
    return out;
  }
}
