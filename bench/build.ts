// Build benchmark: the DADI-shaped image build (15 layers, 545 MB of new files; `dadi-build` in the
// bench data directory) by obdkit and by upstream buildkitd, in the same run, against the same local
// registry and the same Debian bookworm base image. Each round builds cold (a fresh root: the base is
// pulled and unpacked again) and then warm (same root, every step cached), both pushing the image.
// Rounds alternate which builder goes first. Prints wall and CPU time of each, the ratio
// obdkit/buildkitd (goal ≤ 0.6 cold), the layer bytes each pushed (read back from the registry), and
// what obdkit's commit dropped as blocks identical to lower layers and discards over nothing.
//
// Run (root, /dev/fuse, runc, docker-registry; Debian mirror reachable the first time, for the base):
//   node dist/bench/build.js [--runs N] [--skip-buildkitd] [--skip-obdkit] [--obd-base] [--timeout SECONDS] [--logs DIR]
// --obd-base adds, per round, an obdkit cold build FROM the same base already converted to overlaybd and
// pushed (the DADI setting: the registry serves overlaybd images, FROM stacks them lazily); buildkitd
// has no such case, so it is reported apart, against buildkitd's cold build from the ordinary base.
// Build logs go to --logs DIR, or to a temp dir that is kept only when a build fails.
// Env: OBDKIT_BENCH_DIR (bench data; default <repo>/../shared/bench), OBDKIT_PEER_DIR (holds
// bin/buildkitd and bin/buildctl; default <repo>/../shared/peer), OBDKIT_BENCH_WORK (scratch parent;
// default the system temp dir), OBDKIT_BENCH_BASE_CACHE (cached base layer; default
// /var/lib/obdkit/base-images, the cache `obdkit base-image` uses).
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDebianBase } from '../src/base-image/debian-base.js';
import { pushBaseImage } from '../src/base-image/push-base.js';
import { RegistryClient } from '../src/registry/client.js';
import { DEFAULT_ROOT } from '../src/store/content-store.js';
import { freePort, startRegistry, type RunningRegistry } from '../test/helpers/registry.js';
import { Buildkitd, type BuildctlOutcome } from './lib/buildkitd.js';
import { withCleanup } from './lib/cleanup.js';
import { removeObdkitRoot, runObdkitBuild, snapshotProgram, type ObdkitOutcome } from './lib/obdkit-build.js';
import { inspectPushed, layerDigests, type PushedImage } from './lib/pushed-image.js';
import type { StepTime } from './lib/progress-steps.js';
import { megabytes, ratio, secondsSummary } from './lib/stats.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CONTEXT_FILES = ['Dockerfile', 'gen.pl'];

interface Args {
  runs: number;
  skipBuildkitd: boolean;
  skipObdkit: boolean;
  obdBase: boolean;
  timeoutMs: number;
  logs?: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 1, skipBuildkitd: false, skipObdkit: false, obdBase: false, timeoutMs: 900_000 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${k} needs a value`);
      return v;
    };
    if (k === '--runs') a.runs = Math.max(1, Number.parseInt(value(), 10) || 1);
    else if (k === '--skip-buildkitd') a.skipBuildkitd = true;
    else if (k === '--skip-obdkit') a.skipObdkit = true;
    else if (k === '--obd-base') a.obdBase = true;
    else if (k === '--timeout') a.timeoutMs = Math.max(10, Number(value())) * 1000;
    else if (k === '--logs') a.logs = resolve(value());
    else throw new Error(`unknown argument ${k} (--runs N, --skip-buildkitd, --skip-obdkit, --obd-base, --timeout SECONDS, --logs DIR)`);
  }
  return a;
}

function load(): string {
  return loadavg().map((x) => x.toFixed(2)).join(' ');
}

function say(s: string): void {
  process.stdout.write(`${s}\n`);
}

interface BuilderRound {
  cold?: { wall: number; cpu: number; pushed?: PushedImage; steps: StepTime[]; afterSteps: string };
  warm?: { wall: number; cpu: number; cached: number };
  error?: string;
}

interface ObdkitRound extends BuilderRound {
  coldDetail?: ObdkitOutcome;
}

async function buildkitdRound(o: { binDir: string; work: string; logs: string; reg: RunningRegistry; client: RegistryClient; context: string; base: string; baseLayers: string[]; round: number; timeoutMs: number }): Promise<BuilderRound> {
  const dir = await mkdtemp(join(o.work, `buildkitd-${o.round}-`));
  const name = `${o.reg.host}/dadi-build:buildkitd-${o.round}`;
  const out: BuilderRound = {};
  let daemon: Buildkitd | undefined;
  const stop = async (): Promise<void> => {
    if (daemon) await daemon.stop();
    daemon = undefined;
    await rm(dir, { recursive: true, force: true });
  };
  await withCleanup(stop, async () => {
    try {
      daemon = await Buildkitd.start({ binDir: o.binDir, dir, registryHost: o.reg.host, port: await freePort() });
    } catch (err) {
      out.error = `starting buildkitd: ${(err as Error).message}`;
      return;
    }
    const build = (phase: string): Promise<BuildctlOutcome> =>
      daemon!.build({ context: o.context, buildArgs: { BASE: o.base }, name, timeoutMs: o.timeoutMs, logFile: join(o.logs, `buildkitd-${o.round}-${phase}.log`) });
    say(`  buildkitd cold (load ${load()}) ...`);
    const cold = await build('cold');
    if (!cold.ok) {
      out.error = `cold build: ${cold.error ?? 'failed'}`;
      return;
    }
    const exported = `export ${cold.exportSeconds?.toFixed(1) ?? '?'} + push ${cold.pushSeconds?.toFixed(1) ?? '?'} s`;
    out.cold = { wall: cold.run.wallSeconds, cpu: cold.daemonCpuSeconds + cold.run.cpuSeconds, pushed: await inspectPushed(o.client, name, o.baseLayers), steps: cold.steps, afterSteps: exported };
    say(`  buildkitd cold: ${cold.run.wallSeconds.toFixed(2)} s wall, ${out.cold.cpu.toFixed(1)} CPU-s (daemon + runc + buildctl)`);
    say(`  buildkitd warm (load ${load()}) ...`);
    const warm = await build('warm');
    if (!warm.ok) {
      out.error = `warm build: ${warm.error ?? 'failed'}`;
      return;
    }
    out.warm = { wall: warm.run.wallSeconds, cpu: warm.daemonCpuSeconds + warm.run.cpuSeconds, cached: warm.cachedSteps };
    say(`  buildkitd warm: ${warm.run.wallSeconds.toFixed(2)} s wall, ${warm.cachedSteps} steps cached`);
  });
  return out;
}

async function obdkitRound(o: { program: string; work: string; logs: string; reg: RunningRegistry; client: RegistryClient; context: string; base: string; baseLayers: string[]; round: number; timeoutMs: number; tag?: string; coldOnly?: boolean }): Promise<ObdkitRound> {
  const tag = o.tag ?? 'obdkit';
  const root = await mkdtemp(join(o.work, `${tag}-${o.round}-`));
  const name = `${o.reg.host}/dadi-build:${tag}-${o.round}`;
  const out: ObdkitRound = {};
  await withCleanup(
    () => removeObdkitRoot(root),
    async () => {
      const build = (phase: string): Promise<ObdkitOutcome> =>
        runObdkitBuild({ repo: o.program, root, context: o.context, buildArgs: { BASE: o.base }, name, timeoutMs: o.timeoutMs, logFile: join(o.logs, `${tag}-${o.round}-${phase}.log`) });
      say(`  ${tag} cold (load ${load()}) ...`);
      const cold = await build('cold');
      out.coldDetail = cold;
      if (!cold.ok) {
        out.error = `cold build: ${cold.error ?? 'failed'}`;
        return;
      }
      const after = cold.solveSeconds === undefined ? '?' : `export + push ${(cold.run.wallSeconds - cold.solveSeconds).toFixed(1)} s (incl. process start)`;
      out.cold = { wall: cold.run.wallSeconds, cpu: cold.run.cpuSeconds, pushed: await inspectPushed(o.client, name, o.baseLayers), steps: cold.steps, afterSteps: after };
      const solve = cold.solveSeconds === undefined ? '' : ` (steps ${cold.solveSeconds.toFixed(1)} s, then export + push)`;
      say(`  ${tag} cold: ${cold.run.wallSeconds.toFixed(2)} s wall${solve}, ${cold.run.cpuSeconds.toFixed(1)} CPU-s`);
      if (o.coldOnly) return;
      say(`  obdkit warm (load ${load()}) ...`);
      const warm = await build('warm');
      if (!warm.ok) {
        out.error = `warm build: ${warm.error ?? 'failed'}`;
        return;
      }
      out.warm = { wall: warm.run.wallSeconds, cpu: warm.run.cpuSeconds, cached: warm.cachedSteps };
      say(`  obdkit warm: ${warm.run.wallSeconds.toFixed(2)} s wall, ${warm.cachedSteps} steps cached, ${warm.ranSteps} ran`);
    },
  );
  return out;
}

function pushedLine(p: PushedImage | undefined): string {
  if (!p) return '—';
  return `${megabytes(p.layerBytes)} in ${p.layers} layers; not from the base: ${megabytes(p.newLayerBytes)} in ${p.newLayers} [${p.layerMediaTypes.join(', ')}]`;
}

/** The first successful cold build of each builder, step by step (seconds from `#N DONE`). */
function stepTable(obd: BuilderRound | undefined, bk: BuilderRound | undefined): void {
  const rows = new Map<string, { name: string; obd?: number; bk?: number }>();
  for (const [side, r] of [['obd', obd], ['bk', bk]] as const) {
    for (const s of r?.cold?.steps ?? []) {
      const row = rows.get(s.index) ?? { name: s.name };
      if (s.seconds !== undefined) row[side] = s.seconds;
      rows.set(s.index, row);
    }
  }
  if (rows.size === 0) return;
  const cell = (v: number | undefined): string => (v === undefined ? '—' : v.toFixed(1)).padStart(8);
  say(`
cold build, seconds per step (first successful round)
${'step'.padEnd(7)}${'obdkit'.padStart(8)}${'buildkitd'.padStart(10)}  instruction`);
  let to = 0;
  let tb = 0;
  for (const [index, row] of rows) {
    to += row.obd ?? 0;
    tb += row.bk ?? 0;
    const name = row.name.length > 70 ? `${row.name.slice(0, 67)}...` : row.name;
    say(`${index.padEnd(7)}${cell(row.obd)}  ${cell(row.bk)}  ${name}`);
  }
  say(`${'sum'.padEnd(7)}${cell(obd?.cold ? to : undefined)}  ${cell(bk?.cold ? tb : undefined)}`);
  say(`after the steps: obdkit ${obd?.cold?.afterSteps ?? '—'}; buildkitd ${bk?.cold?.afterSteps ?? '—'}`);
}

function report(bk: BuilderRound[], obd: ObdkitRound[], obdLazy: ObdkitRound[], a: Args): void {
  stepTable(obd.find((r) => r.cold), bk.find((r) => r.cold));
  const pick = <T>(rs: BuilderRound[], f: (r: BuilderRound) => T | undefined): T[] => rs.map(f).filter((x): x is T => x !== undefined);
  const bkCold = pick(bk, (r) => r.cold?.wall);
  const obdCold = pick(obd, (r) => r.cold?.wall);
  const bkWarm = pick(bk, (r) => r.warm?.wall);
  const obdWarm = pick(obd, (r) => r.warm?.wall);
  say('\n== dadi-build: obdkit vs buildkitd (wall time of the client command; median (min–max)) ==');
  say(`cold, image + push : obdkit ${secondsSummary(obdCold)}   buildkitd ${secondsSummary(bkCold)}   obdkit/buildkitd ${ratio(obdCold, bkCold)} (goal ≤ 0.60)`);
  say(`warm, image + push : obdkit ${secondsSummary(obdWarm)}   buildkitd ${secondsSummary(bkWarm)}   obdkit/buildkitd ${ratio(obdWarm, bkWarm)}`);
  // Rounds that both builders completed, paired: under a load that changes from minute to minute,
  // these say more than the ratio of the medians.
  const paired = bk.map((b, i) => (b.cold && obd[i]?.cold ? (obd[i]!.cold!.wall / b.cold.wall).toFixed(2) : '—'));
  if (bk.length > 0 && obd.length > 0) say(`cold, per round    : obdkit/buildkitd ${paired.map((p, i) => `r${i + 1} ${p}`).join(', ')}`);
  if (a.obdBase) {
    const lazyCold = pick(obdLazy, (r) => r.cold?.wall);
    say(`cold, overlaybd base (obdkit FROM stacks it lazily; buildkitd from the ordinary base): obdkit ${secondsSummary(lazyCold)}   buildkitd ${secondsSummary(bkCold)}   obdkit/buildkitd ${ratio(lazyCold, bkCold)}`);
    const lazyFrom = obdLazy.find((r) => r.cold)?.cold?.steps[0];
    if (lazyFrom?.seconds !== undefined) say(`                     its FROM step: ${lazyFrom.seconds.toFixed(1)} s`);
  }
  const bkCpu = pick(bk, (r) => r.cold?.cpu);
  const obdCpu = pick(obd, (r) => r.cold?.cpu);
  say(`cold CPU           : obdkit ${secondsSummary(obdCpu, 1)}   buildkitd ${secondsSummary(bkCpu, 1)} (daemon, runc, buildctl)   obdkit/buildkitd ${ratio(obdCpu, bkCpu)}`);
  say(`pushed, obdkit     : ${pushedLine(obd.find((r) => r.cold?.pushed)?.cold?.pushed)}`);
  say(`pushed, buildkitd  : ${pushedLine(bk.find((r) => r.cold?.pushed)?.cold?.pushed)}`);
  const detail = obd.find((r) => r.cold && r.coldDetail)?.coldDetail;
  if (detail) {
    const sum = (f: (l: ObdkitOutcome['layers'][number]) => number): number => detail.layers.reduce((s, l) => s + f(l), 0);
    if (detail.layers.length === 0) {
      say('obdkit commit      : the build output reports no per-layer commit figures');
    } else {
      say(
        `obdkit commit      : ${detail.layers.length} layers sealed, ${megabytes(sum((l) => l.size))} of blobs; dropped ${megabytes(sum((l) => l.identicalBytes))} ` +
          `identical to lower layers (of ${megabytes(sum((l) => l.writtenBytes))} written) and ${megabytes(sum((l) => l.zeroedDroppedBytes))} ` +
          `of discards over nothing (of ${megabytes(sum((l) => l.zeroedBytes))} discarded); figures as printed, 3 significant digits each`,
      );
    }
  }
  for (const [who, rs] of [['buildkitd', bk], ['obdkit', obd], ['obdkit (overlaybd base)', obdLazy]] as const) {
    rs.forEach((r, i) => {
      if (r.error) say(`\n${who} round ${i + 1} FAILED — ${r.error}`);
    });
  }
  if (a.skipBuildkitd) say('(buildkitd skipped)');
  if (a.skipObdkit) say('(obdkit skipped)');
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const benchDir = resolve(process.env.OBDKIT_BENCH_DIR ?? join(REPO, '..', 'shared', 'bench'), 'dadi-build');
  const peerBin = resolve(process.env.OBDKIT_PEER_DIR ?? join(REPO, '..', 'shared', 'peer'), 'bin');
  const baseCache = process.env.OBDKIT_BENCH_BASE_CACHE ?? join(DEFAULT_ROOT, 'base-images');
  for (const f of CONTEXT_FILES) if (!existsSync(join(benchDir, f))) throw new Error(`${join(benchDir, f)} is missing (set OBDKIT_BENCH_DIR)`);
  if (!a.skipBuildkitd && !existsSync(join(peerBin, 'buildkitd'))) throw new Error(`${join(peerBin, 'buildkitd')} is missing (set OBDKIT_PEER_DIR)`);
  if (!a.skipObdkit && !existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js'))) throw new Error('dist/ is missing: build first (npx tsc -p tsconfig.json)');

  const workParent = process.env.OBDKIT_BENCH_WORK ?? tmpdir();
  await mkdir(workParent, { recursive: true });
  const work = await mkdtemp(join(workParent, 'obdkit-bench-build-'));
  // Logs outlive the scratch directory when a build fails, so a failure can be looked into.
  const logs = a.logs ?? (await mkdtemp(join(workParent, 'obdkit-bench-build-logs-')));
  const startLoad = load();
  const bk: BuilderRound[] = [];
  const obd: ObdkitRound[] = [];
  const obdLazy: ObdkitRound[] = [];
  await withCleanup(
    () => rm(work, { recursive: true, force: true }),
    async () => {
      await mkdir(logs, { recursive: true });
      const context = join(work, 'context');
      await mkdir(context);
      for (const f of CONTEXT_FILES) await copyFile(join(benchDir, f), join(context, f));
      const program = await snapshotProgram(REPO, join(work, 'program'));

      const reg = await startRegistry();
      const client = new RegistryClient({ dockerConfig: false });
      await withCleanup(
        async () => {
          await client.close();
          await reg.stop();
        },
        async () => {
          const t0 = performance.now();
          const baseLayer = await makeDebianBase({ cacheDir: baseCache });
          const base = `${reg.host}/debian:bookworm`;
          const pushedBase = await pushBaseImage(baseLayer, base, { client });
          const baseLayers = await layerDigests(client, base);
          say(`dadi-build context: ${(await readFile(join(context, 'Dockerfile'), 'utf8')).split('\n').filter((l) => /^(RUN|COPY|FROM)\b/.test(l)).length} instructions; registry ${reg.host}`);
          say(
            `base ${base}@${pushedBase.digest}: one ${megabytes(baseLayer.size)} gzip layer (${baseLayer.built ? 'made now' : 'from the cache'}, ` +
              `${((performance.now() - t0) / 1000).toFixed(1)} s incl. push)`,
          );
          let obdBase: string | undefined;
          if (a.obdBase) {
            // The same base, converted by obdkit and pushed as an overlaybd image (a Dockerfile of one FROM).
            obdBase = `${reg.host}/debian:bookworm-obd`;
            const convRoot = await mkdtemp(join(work, 'obd-base-'));
            const convCtx = join(work, 'obd-base-context');
            await mkdir(convCtx, { recursive: true });
            await writeFile(join(convCtx, 'Dockerfile'), 'ARG BASE\nFROM ${BASE}\n');
            const made = await runObdkitBuild({ repo: program, root: convRoot, context: convCtx, buildArgs: { BASE: base }, name: obdBase, timeoutMs: a.timeoutMs, logFile: join(logs, 'obd-base.log') });
            await removeObdkitRoot(convRoot);
            if (!made.ok) throw new Error(`converting the base to overlaybd: ${made.error ?? 'failed'}`);
            say(`overlaybd base ${obdBase}: converted and pushed by obdkit in ${made.run.wallSeconds.toFixed(1)} s`);
          }
          say(`${a.runs} round(s), cold then warm per builder, timeout ${a.timeoutMs / 1000} s per build; load average at start ${startLoad}; logs in ${logs}`);
          let obdkitBroken = false;
          for (let r = 0; r < a.runs; r++) {
            const common = { program, work, logs, reg, client, context, base, baseLayers, round: r + 1, timeoutMs: a.timeoutMs };
            const order = r % 2 === 0 ? (['buildkitd', 'obdkit'] as const) : (['obdkit', 'buildkitd'] as const);
            const active = order.filter((w) => (w === 'buildkitd' ? !a.skipBuildkitd : !a.skipObdkit && !obdkitBroken));
            if (active.length === 0) break;
            say(`\nround ${r + 1} (${active.join(' then ')})`);
            for (const who of order) {
              if (who === 'buildkitd' && !a.skipBuildkitd) {
                const res = await buildkitdRound({ ...common, binDir: peerBin });
                if (res.error) say(`  buildkitd FAILED — ${res.error}`);
                bk.push(res);
              }
              if (who === 'obdkit' && !a.skipObdkit && !obdkitBroken) {
                const res = await obdkitRound(common);
                if (res.error) {
                  say(`  obdkit FAILED — ${res.error}`);
                  // A build that fails once fails again: do not spend the other rounds on it.
                  obdkitBroken = true;
                }
                obd.push(res);
              }
            }
            if (obdBase !== undefined && !a.skipObdkit && !obdkitBroken) {
              const res = await obdkitRound({ ...common, base: obdBase, baseLayers: await layerDigests(client, obdBase), tag: 'obdkit-lazy', coldOnly: true });
              if (res.error) say(`  obdkit (overlaybd base) FAILED — ${res.error}`);
              obdLazy.push(res);
            }
          }
        },
      );
    },
  );
  report(bk, obd, obdLazy, a);
  say(`load average at start ${startLoad}, at end ${load()} (2 cores)`);
  if ([...bk, ...obd, ...obdLazy].some((r) => r.error)) {
    say(`build logs kept in ${logs}`);
    process.exitCode = 1;
  } else if (a.logs === undefined) {
    await rm(logs, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
