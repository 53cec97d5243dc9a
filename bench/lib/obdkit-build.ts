// obdkit as the builder under test: `obdkit build` run as its own process (as a user would run it)
// against a --root the bench owns, its plain progress read back for what the bench reports: steps run
// and cached, the layers sealed with what the commit dropped (blocks identical to the layers below,
// discards over nothing), and on failure the step that failed. Cleanup tears down any device a
// killed build left under the root before removing it. Neighbours: proc.ts, mounts.ts.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cp, mkdir, rm, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { cleanupStale } from '../../worker/mount/teardown.js';
import { mountsUnder, unmountUnder } from './mounts.js';
import { runTimed, tail, type RunResult } from './proc.js';
import { parseStepTimes, type StepTime } from './progress-steps.js';

/**
 * A private copy of the compiled program (dist/, bin/, package.json; node_modules linked), so that
 * rebuilding the repository while a bench runs cannot swap modules under a running build. Returns the
 * directory to pass as `ObdkitBuild.repo`.
 */
export async function snapshotProgram(repo: string, dest: string): Promise<string> {
  // A copy taken while the compiler is writing dist/ can be half old, half new: check that the whole
  // command line loads, and copy again if it does not.
  for (let attempt = 1; ; attempt++) {
    await rm(dest, { recursive: true, force: true });
    await mkdir(dest, { recursive: true });
    for (const p of ['dist', 'bin', 'package.json']) await cp(join(repo, p), join(dest, p), { recursive: true });
    await symlink(join(repo, 'node_modules'), join(dest, 'node_modules'));
    const probe = await execa(process.execPath, [join(dest, 'bin', 'obdkit.js'), '--version'], { reject: false, timeout: 60_000 });
    if (probe.exitCode === 0) return dest;
    if (attempt === 3) throw new Error(`the compiled program does not load: ${tail(probe.stderr, 5)}`);
    await sleep(10_000);
  }
}

export interface ObdkitBuild {
  /** The program's root (holds bin/obdkit.js): the repository or a snapshotProgram copy. */
  repo: string;
  root: string;
  context: string;
  buildArgs: Record<string, string>;
  name: string;
  timeoutMs: number;
  logFile: string;
}

/** What one sealed layer's progress line says (sizes as printed, so rounded to 3 digits). */
export interface SealedLayerLine {
  digest?: string;
  size: number;
  identicalBytes: number;
  writtenBytes: number;
  zeroedDroppedBytes: number;
  zeroedBytes: number;
}

export interface ObdkitOutcome {
  run: RunResult;
  ok: boolean;
  error?: string;
  digest?: string;
  ranSteps: number;
  cachedSteps: number;
  steps: StepTime[];
  layers: SealedLayerLine[];
  /** Seconds the solve took, from the `built N layer(s) in Xs` line (export and push come after). */
  solveSeconds?: number;
}

const UNITS: Record<string, number> = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };

/** Reads back a size printed as `512B`, `1.23kB`, `45.6MB`; undefined if it is not one. */
export function parseHumanBytes(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(B|kB|MB|GB|TB)$/.exec(s);
  return m ? Math.round(Number(m[1]) * UNITS[m[2]!]!) : undefined;
}

const LAYER_LINE = /^#\d+ (?:layer (sha256:[0-9a-f]{64}) (\S+)|no changes, no layer) \(dropped (\S+) unchanged of (\S+) written, (\S+) of (\S+) discards over nothing\)$/;

export function parseLayerLine(line: string): SealedLayerLine | undefined {
  const m = LAYER_LINE.exec(line);
  if (!m) return undefined;
  const n = (i: number): number | undefined => (m[i] === undefined ? 0 : parseHumanBytes(m[i]!));
  const [size, identical, written, zd, z] = [n(2), n(3), n(4), n(5), n(6)];
  if (size === undefined || identical === undefined || written === undefined || zd === undefined || z === undefined) return undefined;
  const out: SealedLayerLine = { size, identicalBytes: identical, writtenBytes: written, zeroedDroppedBytes: zd, zeroedBytes: z };
  if (m[1]) out.digest = m[1];
  return out;
}

/** The step that failed: its `#N name` header and its ERROR line, if the progress shows one. */
function failedStep(progress: string): string | undefined {
  const lines = progress.split('\n');
  const err = lines.find((l) => /^#\d+ ERROR:/.test(l));
  if (!err) return undefined;
  const n = err.slice(0, err.indexOf(' '));
  const header = lines.find((l) => l.startsWith(`${n} `) && l !== err);
  return header ? `${header}\n${err}` : err;
}

function readOr(path: string, dflt = '?'): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return dflt;
  }
}

/**
 * What a build that passed its deadline was doing, written next to its log before it is killed: a
 * Node diagnostic report (JS stacks of the main thread and the workers, libuv handles; node was
 * started with --report-on-signal), the kernel wait channel of every thread, the processes of its
 * group, and the mounts and loop devices of its root.
 */
async function recordHang(pid: number, b: ObdkitBuild): Promise<string> {
  const file = `${b.logFile}.hang.txt`;
  try {
    process.kill(pid, 'SIGUSR2');
    await sleep(3000);
  } catch {
    // gone already
  }
  const out: string[] = [`obdkit build pid ${pid} passed its ${b.timeoutMs / 1000}s deadline`, '', 'threads (tid comm state wchan):'];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const t = `/proc/${pid}/task/${tid}`;
    const state = readOr(`${t}/stat`).split(') ')[1]?.split(' ')[0] ?? '?';
    out.push(`  ${tid} ${readOr(`${t}/comm`)} ${state} ${readOr(`${t}/wchan`)}`);
    const stack = readOr(`${t}/stack`, '');
    if (stack) out.push(...stack.split('\n').map((l) => `      ${l}`));
  }
  out.push('', 'processes in its group (pid state wchan cmdline):');
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const stat = readOr(`/proc/${p}/stat`, '');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (f[2] !== String(pid)) continue;
    out.push(`  ${p} ${f[0]} ${readOr(`/proc/${p}/wchan`)} ${readOr(`/proc/${p}/cmdline`).replace(/\0/g, ' ')}`);
  }
  out.push('', 'mounts of the root:', ...mountsUnder(b.root).map((m) => `  ${m}`), '', 'loop devices over files in the root:');
  for (const dev of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    const backing = readOr(`/sys/block/${dev}/loop/backing_file`, '');
    if (backing.startsWith(`${b.root}/`)) out.push(`  /dev/${dev} ${backing}`);
  }
  const reports = readdirSync(dirname(b.logFile)).filter((f) => f.startsWith(`report.`) && f.includes(`.${pid}.`));
  out.push('', `node diagnostic report: ${reports.map((r) => join(dirname(b.logFile), r)).join(', ') || 'none written'}`);
  writeFileSync(file, `${out.join('\n')}\n`);
  return file;
}

export async function runObdkitBuild(b: ObdkitBuild): Promise<ObdkitOutcome> {
  // Through NODE_OPTIONS, not argv: worker threads inherit argv flags and refuse the report ones.
  const reportFlags = `--report-on-signal --report-signal=SIGUSR2 --report-directory=${dirname(b.logFile)}`;
  const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} ${reportFlags}`.trim() };
  const args = [join(b.repo, 'bin', 'obdkit.js'), 'build', '--progress', 'plain', '--root', b.root];
  for (const [k, v] of Object.entries(b.buildArgs)) args.push('--build-arg', `${k}=${v}`);
  args.push('--output', `type=image,name=${b.name},push=true,registry.insecure=true`, b.context);
  let hangFile: string | undefined;
  const run = await runTimed(process.execPath, args, {
    cwd: b.repo,
    env,
    timeoutMs: b.timeoutMs,
    stdoutFile: `${b.logFile}.out`,
    stderrFile: b.logFile,
    onTimeout: async (pid) => {
      hangFile = await recordHang(pid, b);
    },
  });
  const progress = readFileSync(b.logFile, 'utf8');
  const ok = run.exitCode === 0 && !run.timedOut;
  const layers: SealedLayerLine[] = [];
  for (const l of progress.split('\n')) {
    const parsed = parseLayerLine(l);
    if (parsed) layers.push(parsed);
  }
  const built = /^built \d+ layer\(s\) in (\d+(?:\.\d+)?)s$/m.exec(progress);
  const outcome: ObdkitOutcome = {
    run,
    ok,
    ranSteps: (progress.match(/^#\d+ DONE /gm) ?? []).length,
    cachedSteps: (progress.match(/^#\d+ CACHED$/gm) ?? []).length,
    steps: parseStepTimes(progress),
    layers,
  };
  if (built) outcome.solveSeconds = Number(built[1]);
  const digest = /^(sha256:[0-9a-f]{64})$/m.exec(run.stdout);
  if (digest) outcome.digest = digest[1]!;
  if (!ok) {
    const why = run.timedOut ? `timed out after ${b.timeoutMs / 1000}s` : `exit ${run.exitCode ?? run.signal}`;
    const step = failedStep(progress);
    const hang = hangFile ? `\nwhat it was doing when killed: ${hangFile}` : '';
    outcome.error = `obdkit build ${why}${step ? `\nfailed step:\n${step}` : ''}\nlast output:\n${tail(progress, 12)}${hang}`;
  }
  return outcome;
}

/** Removes a build root, first tearing down devices and mounts a killed build may have left. */
export async function removeObdkitRoot(root: string): Promise<void> {
  try {
    await cleanupStale(join(root, 'run'));
  } catch {
    // nothing recorded, or already gone: the unmount below still runs
  }
  await unmountUnder(root);
  await rm(root, { recursive: true, force: true });
}
