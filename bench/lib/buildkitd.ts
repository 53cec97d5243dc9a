// Upstream buildkitd as the baseline builder: one daemon per fresh --root (OCI worker, overlayfs
// snapshotter, a plain-http entry for the local registry), builds driven by buildctl with plain
// progress, and a stop that leaves nothing behind (daemon gone, its overlay mounts unmounted, its
// root removed). Neighbours: proc.ts runs the processes, mounts.ts unmounts.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { unmountUnder } from './mounts.js';
import { runTimed, stopGroup, tail, treeCpuSeconds, type RunResult } from './proc.js';
import { parseStepTimes, phaseSeconds, type StepTime } from './progress-steps.js';

export interface BuildkitdOptions {
  /** Directory holding `buildkitd` and `buildctl`. */
  binDir: string;
  /** Scratch directory for this daemon: config, --root and logs go below it. */
  dir: string;
  /** Registry host:port to reach over plain http. */
  registryHost: string;
  /** TCP port to listen on (loopback). */
  port: number;
}

export interface BuildctlBuild {
  context: string;
  buildArgs: Record<string, string>;
  /** Image name to push. */
  name: string;
  timeoutMs: number;
  logFile: string;
}

export interface BuildctlOutcome {
  run: RunResult;
  /** CPU seconds buildkitd (and the runc processes it reaped) spent during the build. */
  daemonCpuSeconds: number;
  /** Steps answered from the cache (`#N CACHED`). */
  cachedSteps: number;
  steps: StepTime[];
  /** `exporting layers` (diff + compress) and `pushing layers`, as buildctl prints them. */
  exportSeconds?: number;
  pushSeconds?: number;
  ok: boolean;
  /** When not ok: the failing step and the last lines of output. */
  error?: string;
}

export function buildkitdConfig(registryHost: string): string {
  return [
    `[registry."${registryHost}"]`,
    '  http = true',
    '  insecure = true',
    '[worker.oci]',
    '  enabled = true',
    '  snapshotter = "overlayfs"',
    '[worker.containerd]',
    '  enabled = false',
    '',
  ].join('\n');
}

export class Buildkitd {
  private child: ChildProcess | undefined;
  readonly root: string;
  readonly addr: string;
  private readonly logFile: string;

  private constructor(private readonly o: BuildkitdOptions) {
    this.root = join(o.dir, 'root');
    this.addr = `tcp://127.0.0.1:${o.port}`;
    this.logFile = join(o.dir, 'buildkitd.log');
  }

  get buildctl(): string {
    return join(this.o.binDir, 'buildctl');
  }

  /** Starts a daemon on a fresh root and waits until it lists its workers. */
  static async start(o: BuildkitdOptions, readyTimeoutMs = 60_000): Promise<Buildkitd> {
    const d = new Buildkitd(o);
    try {
      await d.launch(readyTimeoutMs);
    } catch (err) {
      await d.stop();
      throw err;
    }
    return d;
  }

  private async launch(readyTimeoutMs: number): Promise<void> {
    await mkdir(this.root, { recursive: true });
    const config = join(this.o.dir, 'buildkitd.toml');
    await writeFile(config, buildkitdConfig(this.o.registryHost));
    const fd = openSync(this.logFile, 'w');
    try {
      this.child = spawn(join(this.o.binDir, 'buildkitd'), ['--config', config, '--root', this.root, '--addr', this.addr], {
        stdio: ['ignore', fd, fd],
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    const child = this.child;
    // Wrapped so it cannot be mistaken for a failed probe (execa reports those as Error objects too).
    const failed = new Promise<{ spawnError: Error }>((resolve) => child.once('error', (spawnError) => resolve({ spawnError })));
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`buildkitd exited (${child.exitCode ?? child.signalCode}): ${tail(readFileSync(this.logFile, 'utf8'), 15)}`);
      }
      const probe = await Promise.race([execa(this.buildctl, ['--addr', this.addr, 'debug', 'workers'], { reject: false, timeout: 10_000 }), failed]);
      if ('spawnError' in probe) throw new Error(`cannot start buildkitd: ${probe.spawnError.message}`);
      if (probe.exitCode === 0 && probe.stdout.trim() !== '') return;
      if (Date.now() > deadline) throw new Error(`buildkitd did not answer on ${this.addr}: ${tail(readFileSync(this.logFile, 'utf8'), 15)}`);
      await sleep(200);
    }
  }

  /** One `buildctl build` of a Dockerfile context, pushed to the registry. */
  async build(b: BuildctlBuild): Promise<BuildctlOutcome> {
    const pid = this.child?.pid;
    if (pid === undefined) throw new Error('buildkitd is not running');
    const args = ['--addr', this.addr, 'build', '--progress=plain', '--frontend', 'dockerfile.v0', '--local', `context=${b.context}`, '--local', `dockerfile=${b.context}`];
    for (const [k, v] of Object.entries(b.buildArgs)) args.push('--opt', `build-arg:${k}=${v}`);
    args.push('--output', `type=image,name=${b.name},push=true,registry.insecure=true`);
    const cpu0 = treeCpuSeconds(pid);
    const run = await runTimed(this.buildctl, args, { timeoutMs: b.timeoutMs, stdoutFile: b.logFile, stderrFile: b.logFile });
    const daemonCpuSeconds = treeCpuSeconds(pid) - cpu0;
    const out = readFileSync(b.logFile, 'utf8');
    const ok = run.exitCode === 0 && !run.timedOut;
    const outcome: BuildctlOutcome = { run, daemonCpuSeconds, cachedSteps: (out.match(/^#\d+ CACHED$/gm) ?? []).length, steps: parseStepTimes(out), ok };
    const exp = phaseSeconds(out, 'exporting layers');
    const push = phaseSeconds(out, 'pushing layers');
    if (exp !== undefined) outcome.exportSeconds = exp;
    if (push !== undefined) outcome.pushSeconds = push;
    if (!ok) {
      const why = run.timedOut ? `timed out after ${b.timeoutMs / 1000}s` : `exit ${run.exitCode ?? run.signal}`;
      const errLine = out.split('\n').find((l) => /^#\d+ ERROR:|^error:/.test(l));
      outcome.error = `buildctl build ${why}${errLine ? `: ${errLine}` : ''}\n${tail(out, 12)}`;
    }
    return outcome;
  }

  /** Stops the daemon and removes its root, unmounting the overlays it left. */
  async stop(): Promise<void> {
    if (this.child) await stopGroup(this.child, 20_000);
    this.child = undefined;
    await unmountUnder(this.root);
    await rm(this.root, { recursive: true, force: true });
  }
}
