// The solver's Executor: what each op of the build graph (src/solver/ops.ts) means here.
//   image   → the overlaybd layer chain of a registry image (image-source.ts)
//   scratch → an empty chain; the first step that writes makes the filesystem (mkfs on an empty
//             device), so that step's layer holds the fresh ext4 plus the step's files
//   local   → a named build context, resolved through the ContextProvider when read
//   http    → the downloaded file in a small tree under the store root
//   exec    → runc over a writable device on the parent chain, sealed into the next layer
//   file    → COPY/ADD/mkdir/mkfile into that same kind of writable device (or, with no base, into
//             a small tree under the store root: inline documents)
// Steps that leave nothing visible add no layer; metadata-only instructions never reach here.
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, rename, rm, utimes } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ExecContext, Executor } from '../../src/solver/solver.js';
import type { ChownOpt, CopyAction, ExecOp, FileAction, FileOp, Vertex, VertexId } from '../../src/solver/ops.js';
import type { RegistryClient } from '../../src/registry/client.js';
import type { ContentStore } from '../../src/store/content-store.js';
import { ObdkitError } from '../../src/util/errors.js';
import type { BlockSnapshotter } from '../device/snapshotter.js';
import type { RemoteFetcher } from '../device/remote-channel.js';
import type { SealOutcome } from '../commit/seal.js';
import { runStep, type RunMount } from '../exec/run-step.js';
import { copyFilesInWorker } from '../exec/copy-worker.js';
import { addFiles } from '../exec/add-files.js';
import { mkdirInRoot, mkfileInRoot } from '../exec/file-actions.js';
import { resolveInRoot } from '../exec/root-path.js';
import { download } from '../exec/remote.js';
import type { CopyOptions } from '../exec/copy-files.js';
import { parseChmod } from '../exec/chmod-spec.js';
import { PatternMatcher } from '../../src/util/path-patterns.js';
import { expandSource, parentsPivot, planCopy, wildcardBase } from './glob.js';
import { imageLayers } from './image-source.js';
import type { ContextProvider, SecretProvider } from './providers.js';
import { isLayersResult, type BuildResult, type DirResult, type LayersResult } from './result.js';
import { DevicePool, ViewSet, runOnWritableDevice, settleChain, type StepOutcome } from './step-device.js';

export interface ExecutorDeps {
  store: ContentStore;
  snapshotter: BlockSnapshotter;
  registry: RegistryClient;
  contexts: ContextProvider;
  secrets?: SecretProvider;
  /** runc binary (default `runc` on PATH). */
  runc?: string;
  /** Reads ranges of layers that live in a registry (lazily stacked overlaybd bases). */
  remote?: RemoteFetcher;
  /** Told about every layer a step seals (or did not need to). */
  onLayer?: (vertex: Vertex, outcome: SealOutcome) => void;
}

export class BuildExecutor implements Executor<BuildResult> {
  /** Devices kept alive from one step to the next (one per stage being built). */
  private readonly devices: DevicePool;

  constructor(private readonly deps: ExecutorDeps) {
    this.devices = new DevicePool(deps);
  }

  /** Tears down the devices kept between steps; call once the build is over. */
  close(): Promise<void> {
    return this.devices.close();
  }

  /** A result with its background-sealed layers in place: what the solver caches and returns. */
  async settle(result: BuildResult): Promise<BuildResult> {
    return isLayersResult(result) ? settleChain(result) : result;
  }

  /** Reports the step's layer once sealed; the step's early result goes on meanwhile. */
  private announce(vertex: Vertex, step: StepOutcome): LayersResult {
    step.sealed.then(
      (outcome) => this.deps.onLayer?.(vertex, outcome),
      () => undefined,
    );
    return step.result;
  }

  async exec(vertex: Vertex, inputs: BuildResult[], ctx: ExecContext): Promise<BuildResult> {
    const op = vertex.op;
    const input = (id: VertexId | undefined): BuildResult => {
      const i = id === undefined ? -1 : vertex.inputs.indexOf(id);
      const r = inputs[i];
      if (r === undefined) throw new ObdkitError('EGRAPH', `op refers to ${id ?? 'nothing'}, which is not among its inputs`, { step: vertex.name });
      return r;
    };
    switch (op.kind) {
      case 'scratch':
        return { kind: 'layers', layers: [], steps: [] };
      case 'local':
        return { kind: 'local', name: op.name, excludes: op.excludes };
      case 'image': {
        const layers = await imageLayers(op.ref, op.platform, {
          store: this.deps.store,
          snapshotter: this.deps.snapshotter,
          registry: this.deps.registry,
          log: (line) => ctx.log(line + '\n', 2),
          signal: ctx.signal,
          pool: this.devices,
          ...(this.deps.remote ? { remote: this.deps.remote } : {}),
        });
        return { kind: 'layers', layers, steps: [] };
      }
      case 'http':
        return this.http(op.url, op.filename ?? 'download', op.checksum, ctx);
      case 'exec':
        return this.execOp(vertex, op, input, ctx);
      case 'file':
        return this.fileOp(vertex, op, input, ctx);
    }
  }

  private treeDir(key: string): string {
    return join(this.deps.store.root, 'trees', key.replace(/^sha256:/, ''));
  }

  /** Makes a tree under the store root once per cache key: built aside, renamed into place. */
  private async makeTree(key: string, fill: (dir: string) => Promise<void>): Promise<DirResult> {
    const dest = this.treeDir(key);
    if (existsSync(dest)) return { kind: 'dir', path: dest };
    await mkdir(join(this.deps.store.root, 'trees'), { recursive: true });
    const tmp = await mkdtemp(`${dest}.tmp-`);
    try {
      await fill(tmp);
      if (existsSync(dest)) await rm(tmp, { recursive: true, force: true });
      else await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    return { kind: 'dir', path: dest };
  }

  private http(url: string, filename: string, checksum: string | undefined, ctx: ExecContext): Promise<DirResult> {
    return this.makeTree(ctx.key, async (dir) => {
      const file = join(dir, filename);
      const d = await download(url, file, { ...(checksum ? { checksum } : {}), signal: ctx.signal });
      // Docker's mode and time for a downloaded file: 0600 (unless --chmod), Last-Modified if sent.
      await chmod(file, 0o600);
      if (d.mtime) await utimes(file, d.mtime, d.mtime);
    });
  }

  private async execOp(vertex: Vertex, op: ExecOp, input: (id: VertexId | undefined) => BuildResult, ctx: ExecContext): Promise<LayersResult> {
    const parent = input(op.rootfs);
    if (!isLayersResult(parent)) throw new ObdkitError('EGRAPH', 'RUN needs a filesystem as its root', { step: vertex.name });
    const views = new ViewSet(this.deps);
    try {
      const mounts: RunMount[] = [];
      for (const m of op.mounts) {
        switch (m.type) {
          case 'bind': {
            const dir = await this.sourceDir(input(m.from), views);
            mounts.push({ type: 'bind', target: m.target, source: dir, ...(m.source && m.source !== '/' ? { subpath: m.source } : {}), readonly: m.readonly });
            break;
          }
          case 'cache': {
            // `from=`: the cache starts as a copy of that stage's (or image's, or context's) `source=`
            // tree; without it `source=` picks a directory inside the cache.
            let seed: { dir: string; key: string } | undefined;
            if (m.from !== undefined) {
              const given = input(m.from);
              const from = isLayersResult(given) ? await settleChain(given) : given;
              const root = await this.sourceDir(from, views);
              const sub = posix.normalize('/' + (m.source ?? '/'));
              seed = { dir: sub === '/' ? root : resolveInRoot(root, sub), key: `${seedIdentity(from, ctx.key)}:${sub}` };
            }
            mounts.push({
              type: 'cache',
              target: m.target,
              id: m.id ?? m.target,
              readonly: m.readonly,
              ...(seed ? { seed } : m.source && m.source !== '/' ? { subpath: m.source } : {}),
              ...(m.sharing ? { sharing: m.sharing } : {}),
              ...(m.uid !== undefined ? { uid: m.uid } : {}),
              ...(m.gid !== undefined ? { gid: m.gid } : {}),
              ...(m.mode !== undefined ? { mode: m.mode } : {}),
            });
            break;
          }
          case 'tmpfs':
            mounts.push({ type: 'tmpfs', target: m.target, ...(m.size !== undefined ? { sizeBytes: m.size } : {}) });
            break;
          case 'secret': {
            const id = m.id ?? '';
            const data = await this.deps.secrets?.get(id);
            if (data === undefined) {
              if (m.required) throw new ObdkitError('ESECRET', `secret ${id} not found`, { step: vertex.name });
              break;
            }
            mounts.push({
              type: 'secret',
              id,
              data,
              ...(m.target ? { target: m.target } : {}),
              ...(m.env ? { env: m.env } : {}),
              ...(m.uid !== undefined ? { uid: m.uid } : {}),
              ...(m.gid !== undefined ? { gid: m.gid } : {}),
              ...(m.mode !== undefined ? { mode: m.mode } : {}),
            });
            break;
          }
          case 'ssh':
            throw new ObdkitError('ENOTSUP', 'SSH agent mounts are not supported', { step: vertex.name });
        }
      }
      const step = await runOnWritableDevice(this.deps, parent, ctx.key, vertex.name, async (rootfs) => {
        await runStep({
          rootfs,
          stateRoot: join(this.deps.store.workDir, 'exec'),
          args: op.args,
          env: [...op.env, ...(op.proxyEnv ?? [])],
          cwd: op.cwd,
          user: op.user,
          network: op.network,
          mounts,
          ...(op.hostname ? { hostname: op.hostname } : {}),
          ...(op.extraHosts ? { extraHosts: op.extraHosts } : {}),
          ...(this.deps.runc ? { runc: this.deps.runc } : {}),
          onOutput: (stream, line) => ctx.log(line + '\n', stream === 'stdout' ? 1 : 2),
          signal: ctx.signal,
        });
      }, this.devices);
      return this.announce(vertex, step);
    } finally {
      await views.close();
    }
  }

  private async fileOp(vertex: Vertex, op: FileOp, input: (id: VertexId | undefined) => BuildResult, ctx: ExecContext): Promise<BuildResult> {
    const views = new ViewSet(this.deps);
    try {
      if (op.base === undefined) {
        return await this.makeTree(ctx.key, (dir) => this.applyActions(dir, op.actions, input, views));
      }
      const parent = input(op.base);
      if (!isLayersResult(parent)) throw new ObdkitError('EGRAPH', 'file actions need a filesystem as their base', { step: vertex.name });
      const step = await runOnWritableDevice(
        this.deps,
        parent,
        ctx.key,
        vertex.name,
        (rootfs) => this.applyActions(rootfs, op.actions, input, views),
        this.devices,
      );
      return this.announce(vertex, step);
    } finally {
      await views.close();
    }
  }

  private async applyActions(root: string, actions: FileAction[], input: (id: VertexId | undefined) => BuildResult, views: ViewSet): Promise<void> {
    for (const a of actions) {
      switch (a.action) {
        case 'mkdir':
          mkdirInRoot({ root, path: a.path, mode: a.mode, parents: a.parents, ...chownOpt(a.chown) });
          break;
        case 'mkfile':
          mkfileInRoot({ root, path: a.path, mode: a.mode, data: a.data, ...chownOpt(a.chown) });
          break;
        case 'copy':
          await this.copy(root, a, input(a.from), views);
          break;
      }
    }
  }

  private async copy(root: string, a: CopyAction, from: BuildResult, views: ViewSet): Promise<void> {
    const srcRoot = await this.sourceDir(from, views);
    const sources: string[] = [];
    const matched: { path: string; pivot: string; base?: string }[] = [];
    for (const s of a.src) {
      const found = a.allowWildcard ? expandSource(srcRoot, s) : [posix.normalize('/' + s)];
      if (found.length === 0 && !a.allowEmptyWildcard) {
        throw new ObdkitError('ENOENT', `no source files were specified for ${s}`, { file: s });
      }
      sources.push(...found);
      const pivot = parentsPivot(s);
      const base = a.allowWildcard ? wildcardBase(s) : undefined;
      for (const path of found) matched.push({ path, pivot, ...(base !== undefined ? { base } : {}) });
    }
    if (sources.length === 0) return;
    const common = {
      srcRoot,
      sources,
      destRoot: root,
      dest: a.dest,
      ...chownOpt(a.chown),
      ...(a.chmod !== undefined ? { chmod: a.chmod } : {}),
      // A stage's or image's files keep their owners; context and downloaded files become 0:0.
      preserveOwnership: from.kind === 'layers',
      dirContents: a.dirContents,
      followSymlinks: a.followSymlinks,
    };
    if (!a.parents && a.excludes.length === 0) {
      await this.copyPart(common, a.unpack);
      return;
    }
    // --parents and --exclude become a series of plain copies (and directories made like their sources).
    let matcher: PatternMatcher;
    try {
      matcher = new PatternMatcher(a.excludes);
    } catch (err) {
      throw new ObdkitError('EPATTERN', `invalid COPY --exclude pattern: ${(err as Error).message}`, { dest: a.dest, excludes: a.excludes.join(' ') });
    }
    if (sources.length > 1 && !a.parents && !a.dest.endsWith('/') && !a.dest.endsWith('/.') && !(await isDir(resolveInRoot(root, posix.normalize('/' + a.dest))))) {
      // Checked here because the split below could otherwise hand each source to its own copy.
      throw new ObdkitError('ECOPY', 'when using COPY with more than one source file, the destination must be a directory and end with a /', { dest: a.dest });
    }
    const steps = planCopy({
      srcRoot,
      sources: matched,
      dest: a.dest,
      dirContents: a.dirContents,
      parents: a.parents,
      followSymlinks: a.followSymlinks,
      ...(a.excludes.length > 0 ? { excluded: (rel: string, relToSource: string | undefined) => matcher.matches(rel) || (relToSource !== undefined && matcher.matches(relToSource)) } : {}),
    });
    const mode = a.chmod !== undefined ? parseChmod(a.chmod) : undefined;
    for (const step of steps) {
      if (step.kind === 'mkdir') {
        const st = step.like;
        const chown = a.chown !== undefined ? chownOpt(a.chown).chown! : common.preserveOwnership ? `${st.uid}:${st.gid}` : '0:0';
        mkdirInRoot({ root, path: step.path, mode: mode ? mode(st.mode, true) : st.mode & 0o7777, parents: true, chown });
      } else {
        await this.copyPart({ ...common, sources: step.sources, dest: step.dest, dirContents: step.dirContents }, a.unpack);
      }
    }
  }

  private async copyPart(opts: CopyOptions, unpack: boolean): Promise<void> {
    if (unpack) {
      await mkdir(join(this.deps.store.workDir, 'add'), { recursive: true });
      await addFiles({ ...opts, tmpDir: join(this.deps.store.workDir, 'add') });
    } else {
      await copyFilesInWorker(opts);
    }
  }

  /** A host directory showing a vertex's tree. */
  private async sourceDir(r: BuildResult, views: ViewSet): Promise<string> {
    switch (r.kind) {
      case 'local':
        return this.deps.contexts.dir(r.name, r.excludes);
      case 'dir':
        return r.path;
      case 'layers':
        return views.mount(r);
    }
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * What a cache seeded from `r` is told apart by: the layer chain or tree it shows. A build context
 * has no identity of its own here, so its seed follows the step's cache key, which covers the
 * context's content: a changed context seeds a new cache.
 */
function seedIdentity(r: BuildResult, stepKey: string): string {
  switch (r.kind) {
    case 'layers':
      return r.layers.map((l) => l.digest).join(',');
    case 'dir':
      return r.path;
    case 'local':
      return `context:${r.name}:${stepKey}`;
  }
}

function chownOpt(c: ChownOpt | undefined): { chown?: string } {
  if (!c) return {};
  return { chown: c.group !== undefined ? `${c.user}:${c.group}` : c.user };
}
