// `obdkit build`: a Dockerfile and a context directory in, an overlaybd image out, on this machine.
// A thin command over the build orchestration `obdkit serve` runs too (src/build): the inputs are read
// from local files, the build runs on a BuildService under --root with local hooks (context
// directories, secret files, progress as plain lines or a redrawn terminal display: progress.ts), and
// the output spec picks what to write:
//   type=image,name=REF[,push=true][,registry.insecure=true][,oci-mediatypes=false]
//   type=oci|docker,dest=FILE (an image archive) | type=tar,dest=FILE | type=local,dest=DIR (the rootfs)
// With push=true each layer starts uploading as soon as it is sealed; the manifest goes last, only
// after a successful build. Progress goes to stderr; the image digest goes to stdout.
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  BuildService,
  checkProgressMode,
  parseOutputSpec,
  readLocalBuild,
  runBuild as build,
  writeLocalOutput,
  type BuiltImage,
  type RegistrySettings,
} from '../build/index.js';
import { feedEarlyPush, startEarlyPush } from '../build/outputs.js';
import { parseReference } from '../registry/reference.js';
import { DEFAULT_ROOT } from '../store/content-store.js';
import { ObdkitError } from '../util/errors.js';
import { FileSecrets, LocalDirContexts } from '../../worker/build/providers.js';
import { makeProgress } from './progress.js';
import type { TtyStream } from './progress-tty.js';
import { runAction } from './run.js';

export { parseOutputSpec };

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

/**
 * The whole build; used by the command and by tests. Progress lines go to `write`, or, when
 * `o.progress` asks for the terminal display (`tty`, or `auto` on a terminal), to `terminal`.
 */
export async function runBuild(
  contextDir: string,
  o: BuildCliOptions,
  write: (s: string) => void,
  signal?: AbortSignal,
  terminal?: TtyStream,
): Promise<BuildOutcome> {
  const local = readLocalBuild(contextDir, {
    ...(o.file ? { file: o.file } : {}),
    ...(o.target ? { target: o.target } : {}),
    ...(o.platform ? { platform: o.platform } : {}),
    buildArgs: o.buildArg,
    secrets: o.secret,
    noCache: !o.cache,
  });
  checkProgressMode(o.progress);
  const output = o.output ? parseOutputSpec(o.output) : undefined;
  // registry.insecure names a plain-http registry, which a base image may come from as well.
  const registries: Record<string, RegistrySettings> = {};
  if (output?.type === 'image' && output.insecure) for (const n of output.names) registries[parseReference(n).host] = { http: true };
  // One step at a time: this command is one build, and its numbered lines read best in order.
  const service = await BuildService.open({ root: o.root, maxParallelism: 1, registries });
  const scratch = await mkdtemp(join(service.store.workDir, 'local-'));
  const contexts = new LocalDirContexts({ [local.request.contextName ?? 'context']: local.contextDir }, scratch);
  const progress = makeProgress(o.progress, write, terminal);
  let early: ReturnType<typeof startEarlyPush>;
  try {
    early = output?.type === 'image' ? startEarlyPush(service, output) : undefined;
    const t0 = Date.now();
    let built: BuiltImage;
    try {
      built = await build(service, local.request, {
        contexts,
        secrets: new FileSecrets(local.secretFiles),
        progress: (e) => progress.event(e),
        onLayer: (v, outcome) => {
          progress.layer(v, outcome);
          feedEarlyPush(service.store, early, outcome);
        },
        onWarning: (w) => progress.message(`WARNING: ${w}\n`),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      progress.close(true);
      throw err;
    }
    progress.close(false);
    write(`built ${built.chain.layers.length} layer(s) in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
    const outcome: BuildOutcome = { ran: progress.ran.size, cached: progress.cached.size };
    if (output) {
      const digest = await writeLocalOutput(service, built, output, write, early);
      if (digest) outcome.digest = digest;
    }
    return outcome;
  } finally {
    // After a push nothing is in flight; after a failure the uploads still running are abandoned.
    await early?.close();
    contexts.close();
    await rm(scratch, { recursive: true, force: true });
    await service.close();
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
    .option('--progress <mode>', 'plain (numbered lines), tty (redrawn display) or auto (tty on a terminal)', 'auto')
    .option('--root <dir>', 'state and content store directory', DEFAULT_ROOT)
    .option('-o, --output <spec>', 'type=image,name=REF,push=true | type=oci|docker,dest=FILE | type=tar,dest=FILE | type=local,dest=DIR')
    .action(
      runAction(async (contextDir: string, o: BuildCliOptions) => {
        // Ctrl-C cancels the running step; devices are torn down on the way out.
        const ac = new AbortController();
        const onSignal = (): void => ac.abort(new ObdkitError('ECANCELED', 'build cancelled'));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const r = await runBuild(contextDir, o, (s) => process.stderr.write(s), ac.signal, process.stderr);
          if (r.digest) process.stdout.write(`${r.digest}\n`);
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }),
    );
}
