// `obdkit build`: a Dockerfile and a context directory in, an overlaybd image out, on this machine.
// The frontend turns the Dockerfile into a graph, the solver runs it with the worker's executor
// (devices, runc, sealing; results cached under --root), and the output spec picks what to write:
//   type=image,name=REF[,push=true][,registry.insecure=true][,oci-mediatypes=false]
//   type=oci,dest=FILE | type=tar,dest=FILE (the rootfs) | type=local,dest=DIR (the rootfs)
// Progress goes to stderr as numbered steps; the image digest goes to stdout.
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { convertDockerfile, parseDockerignore } from '../../frontend/index.js';
import type { ResolvedImage } from '../../frontend/image-config.js';
import { Solver } from '../solver/solver.js';
import { FileCacheIndex } from '../solver/cache-index.js';
import type { Platform } from '../solver/ops.js';
import { RegistryClient, type RegistryHostOptions } from '../registry/client.js';
import { resolveImage } from '../registry/pull.js';
import { parseReference } from '../registry/reference.js';
import { pushExportImage } from '../exporter/registry-push.js';
import { writeOciArchive } from '../exporter/archive-writers.js';
import { writeRootfsTar } from '../exporter/rootfs-tar.js';
import { exportLocal } from '../exporter/local.js';
import { ContentStore, DEFAULT_ROOT } from '../store/content-store.js';
import { ObdkitError } from '../util/errors.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import { cleanupStale } from '../../worker/mount/teardown.js';
import { BuildExecutor } from '../../worker/build/executor.js';
import { localContentHasher } from '../../worker/build/content-hash.js';
import { FileSecrets, LocalDirContexts } from '../../worker/build/providers.js';
import { PlainProgress } from '../../worker/build/progress.js';
import { exportImageFrom } from '../../worker/build/image-output.js';
import { ViewSet } from '../../worker/build/step-device.js';
import { StoreCheckedIndex } from '../../worker/build/checked-index.js';
import { isLayersResult, type BuildResult } from '../../worker/build/result.js';
import { runAction } from './run.js';

export type OutputSpec =
  | { type: 'image'; names: string[]; push: boolean; insecure: boolean; oci: boolean }
  | { type: 'oci'; dest: string }
  | { type: 'tar'; dest: string }
  | { type: 'local'; dest: string };

/** Splits `k=v,k=v` (a value may be quoted to hold commas). */
export function parseKeyValues(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = spec.match(/(?:[^,"]+|"[^"]*")+/g) ?? [];
  for (const p of parts) {
    const i = p.indexOf('=');
    if (i < 0) throw new ObdkitError('EUSAGE', `expected key=value in ${JSON.stringify(spec)}, got ${JSON.stringify(p)}`);
    out[p.slice(0, i).trim()] = p.slice(i + 1).trim().replace(/^"|"$/g, '');
  }
  return out;
}

export function parseOutputSpec(spec: string): OutputSpec {
  const kv = parseKeyValues(spec);
  const t = kv['type'] ?? 'image';
  const bool = (k: string): boolean => ['true', '1', 'yes'].includes((kv[k] ?? '').toLowerCase());
  switch (t) {
    case 'image':
    case 'registry': {
      const names = (kv['name'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
      if (names.length === 0) throw new ObdkitError('EUSAGE', 'type=image needs name=REF');
      return { type: 'image', names, push: t === 'registry' || bool('push'), insecure: bool('registry.insecure'), oci: kv['oci-mediatypes'] === undefined || bool('oci-mediatypes') };
    }
    case 'oci':
    case 'tar':
    case 'local': {
      const dest = kv['dest'];
      if (!dest) throw new ObdkitError('EUSAGE', `type=${t} needs dest=PATH`);
      return t === 'local' ? { type: 'local', dest } : t === 'oci' ? { type: 'oci', dest } : { type: 'tar', dest };
    }
    default:
      throw new ObdkitError('EUSAGE', `unknown output type ${t} (image, oci, tar, local)`);
  }
}

export interface BuildCliOptions {
  file?: string;
  target?: string;
  buildArg: string[];
  secret: string[];
  cache: boolean;
  progress: string;
  root: string;
  output?: string;
  platform?: string;
}

export interface BuildOutcome {
  digest?: string;
  /** Steps run and steps answered from the cache. */
  ran: number;
  cached: number;
}

/** The whole build; used by the command and by tests. Progress lines go to `write`. */
export async function runBuild(contextDir: string, o: BuildCliOptions, write: (s: string) => void, signal?: AbortSignal): Promise<BuildOutcome> {
  const context = resolve(contextDir);
  if (!existsSync(context) || !statSync(context).isDirectory()) throw new ObdkitError('EUSAGE', 'build context is not a directory', { file: context });
  const dockerfilePath = resolve(context, o.file ?? 'Dockerfile');
  let dockerfile: string;
  try {
    dockerfile = readFileSync(dockerfilePath, 'utf8');
  } catch (err) {
    throw new ObdkitError('EUSAGE', `cannot read Dockerfile: ${(err as Error).message}`, { file: dockerfilePath });
  }
  if (o.progress !== 'plain' && o.progress !== 'tty' && o.progress !== 'auto') {
    throw new ObdkitError('EUSAGE', `--progress must be plain, tty or auto, got ${JSON.stringify(o.progress)}`);
  }
  const output = o.output ? parseOutputSpec(o.output) : undefined;
  const buildArgs: Record<string, string> = {};
  for (const a of o.buildArg) {
    const i = a.indexOf('=');
    if (i < 0) {
      const v = process.env[a];
      if (v !== undefined) buildArgs[a] = v;
    } else buildArgs[a.slice(0, i)] = a.slice(i + 1);
  }
  const secretFiles: Record<string, string> = {};
  for (const s of o.secret) {
    const kv = parseKeyValues(s);
    const id = kv['id'];
    const src = kv['src'] ?? kv['source'];
    if (!id || !src) throw new ObdkitError('EUSAGE', `--secret needs id=ID,src=FILE, got ${JSON.stringify(s)}`);
    secretFiles[id] = resolve(src);
  }
  let excludes: string[] = [];
  const ignoreFile = join(context, '.dockerignore');
  if (existsSync(ignoreFile)) excludes = parseDockerignore(readFileSync(ignoreFile, 'utf8'));

  const hosts: Record<string, RegistryHostOptions> = {};
  if (output?.type === 'image' && output.insecure) for (const n of output.names) hosts[parseReference(n).host] = { insecure: true };
  const registry = new RegistryClient({ hosts });
  const store = new ContentStore(o.root);
  mkdirSync(store.runDir, { recursive: true });
  await cleanupStale(store.runDir);
  const snapshotter = new FuseLoopSnapshotter({ runDir: store.runDir });
  const contexts = new LocalDirContexts({ context }, (mkdirSync(join(store.workDir, 'contexts'), { recursive: true }), join(store.workDir, 'contexts')));
  const progress = new PlainProgress(write);
  try {
    const resolveImageConfig = async (ref: string, platform: Platform): Promise<ResolvedImage> => {
      const img = await resolveImage(registry, parseReference(ref), platform);
      return { digest: img.manifestDigest, config: img.config.raw as ResolvedImage['config'] };
    };
    const conv = await convertDockerfile({
      dockerfile,
      filename: basename(dockerfilePath),
      ...(o.target ? { target: o.target } : {}),
      buildArgs,
      excludes,
      contextName: 'context',
      noCache: !o.cache,
      resolveImageConfig,
    });
    for (const w of conv.warnings) write(`WARNING: ${w}\n`);
    const executor = new BuildExecutor({
      store,
      snapshotter,
      registry,
      contexts,
      secrets: new FileSecrets(secretFiles),
      onLayer: (v, outcome) => progress.layer(v, outcome),
    });
    const solver = new Solver<BuildResult>({
      index: new StoreCheckedIndex(new FileCacheIndex<BuildResult>(store.stateDir), store),
      concurrency: 1,
      contentHasher: localContentHasher(contexts, () => store.tmpPath('hash')),
    });
    const t0 = Date.now();
    const solved = await solver.solve(conv.graph, conv.target, {
      executor,
      noCache: !o.cache,
      progress: (e) => progress.event(e),
      ...(signal ? { signal } : {}),
    });
    const chain = solved.result;
    if (!isLayersResult(chain)) throw new ObdkitError('EBUILD', `the target is not a filesystem (${chain.kind})`);
    write(`built ${chain.layers.length} layer(s) in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
    const outcome: BuildOutcome = { ran: progress.ran.size, cached: progress.cached.size };
    if (!output) return outcome;

    if (output.type === 'oci') {
      const image = exportImageFrom(store, chain, conv.image, conv.platform, { oci: true });
      outcome.digest = image.manifestDescriptor.digest;
      await writeOciArchive(image, resolve(output.dest));
      write(`wrote OCI layout archive ${output.dest} (${image.manifestDescriptor.digest})\n`);
      return outcome;
    }
    if (output.type === 'image') {
      const image = exportImageFrom(store, chain, conv.image, conv.platform, { oci: output.oci });
      outcome.digest = image.manifestDescriptor.digest;
      if (output.push) {
        for (const r of await pushExportImage(image, { client: registry, names: output.names })) write(`pushed ${r.name}@${r.digest}\n`);
      } else {
        write(`image ${image.manifestDescriptor.digest} built (not pushed: add push=true)\n`);
      }
      return outcome;
    }
    const views = new ViewSet({ store, snapshotter });
    try {
      const rootfs = await views.mount(chain);
      if (output.type === 'tar') await writeRootfsTar(rootfs, resolve(output.dest));
      else await exportLocal(rootfs, resolve(output.dest));
      write(`exported rootfs to ${output.dest}\n`);
    } finally {
      await views.close();
    }
    return outcome;
  } finally {
    contexts.close();
    await snapshotter.close();
    await registry.close();
  }
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

export function registerBuildCommand(program: Command): void {
  program
    .command('build')
    .description('build an overlaybd image from a Dockerfile')
    .argument('<context>', 'build context directory')
    .option('-f, --file <path>', 'Dockerfile (default: CONTEXT/Dockerfile)')
    .option('--target <stage>', 'stage to build')
    .option('--build-arg <k=v>', 'build-time variable (repeatable)', collect, [])
    .option('--secret <id=ID,src=FILE>', 'secret for RUN --mount=type=secret (repeatable)', collect, [])
    .option('--no-cache', 'do not use cached step results')
    .option('--progress <mode>', 'plain, tty or auto (all print numbered steps as plain text)', 'plain')
    .option('--root <dir>', 'state and content store directory', DEFAULT_ROOT)
    .option('-o, --output <spec>', 'type=image,name=REF,push=true | type=oci,dest=FILE | type=tar,dest=FILE | type=local,dest=DIR')
    .action(
      runAction(async (contextDir: string, o: BuildCliOptions) => {
        // Ctrl-C cancels the running step; devices are torn down on the way out.
        const ac = new AbortController();
        const onSignal = (): void => ac.abort(new ObdkitError('ECANCELED', 'build cancelled'));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const r = await runBuild(contextDir, o, (s) => process.stderr.write(s), ac.signal);
          if (r.digest) process.stdout.write(`${r.digest}\n`);
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}
