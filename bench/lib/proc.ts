// Child processes for benches: run a command to completion with a deadline, its output in files, and
// report wall time and CPU time. CPU comes from /proc: a finished child's time shows up in this
// process's cutime/cstime once it is reaped (with everything it reaped itself), and a long-lived
// daemon's time is read from its own stat line before and after. Neighbours: buildkitd.ts and
// obdkit-build.ts run their builds through `runTimed`.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const CLOCK_TICKS = 100;

/** utime, stime, cutime, cstime of a process in seconds (fields 14–17 of /proc/PID/stat). */
export function processCpuSeconds(pid: number | 'self'): { self: number; children: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces and parentheses; the numeric fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const at = (field: number): number => Number(f[field - 3] ?? 0) / CLOCK_TICKS;
  return { self: at(14) + at(15), children: at(16) + at(17) };
}

/** CPU seconds of a process and the children it has reaped, or 0 when it is gone. */
export function treeCpuSeconds(pid: number): number {
  try {
    const c = processCpuSeconds(pid);
    return c.self + c.children;
  } catch {
    return 0;
  }
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the whole process group after this many milliseconds. */
  timeoutMs: number;
  /** Where stdout and stderr go (stderr may be the same file). */
  stdoutFile: string;
  stderrFile: string;
  /** Called with the child's pid when the deadline passes, before it is killed (to record why it hangs). */
  onTimeout?: (pid: number) => Promise<void>;
}

export interface RunResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  wallSeconds: number;
  /** CPU of the child and everything it reaped. */
  cpuSeconds: number;
  stdout: string;
  stderr: string;
}

/** Sends `signal` to a process group we started, ignoring one that is already gone. */
export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already exited
  }
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Stops a process group: SIGTERM, then SIGKILL if it is still there after `graceMs`. */
export async function stopGroup(child: ChildProcess, graceMs: number): Promise<void> {
  const done = exited(child);
  signalGroup(child, 'SIGTERM');
  const gone = await Promise.race([done.then(() => true), sleep(graceMs).then(() => false)]);
  if (!gone) {
    signalGroup(child, 'SIGKILL');
    await done;
  }
}

/** Runs a command in its own process group and waits for it (or for the deadline). */
export async function runTimed(cmd: string, args: string[], o: RunOptions): Promise<RunResult> {
  const outFd = openSync(o.stdoutFile, 'w');
  const errFd = o.stderrFile === o.stdoutFile ? outFd : openSync(o.stderrFile, 'w');
  const before = processCpuSeconds('self').children;
  const t0 = performance.now();
  let child: ChildProcess;
  try {
    child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: ['ignore', outFd, errFd], detached: true });
  } finally {
    closeSync(outFd);
    if (errFd !== outFd) closeSync(errFd);
  }
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void (async () => {
      if (o.onTimeout && child.pid !== undefined) {
        try {
          await o.onTimeout(child.pid);
        } catch {
          // diagnostics are best effort; the kill below is what matters
        }
      }
      await stopGroup(child, 10_000);
    })();
  }, o.timeoutMs);
  try {
    const first = await Promise.race([exited(child).then(() => undefined), spawnError]);
    if (first instanceof Error) throw new Error(`cannot start ${cmd}: ${first.message}`);
  } finally {
    clearTimeout(timer);
  }
  const wallSeconds = (performance.now() - t0) / 1000;
  // The child is reaped by the time 'exit' fires, so its CPU is already in our children's total.
  const cpuSeconds = processCpuSeconds('self').children - before;
  return {
    exitCode: child.exitCode,
    signal: child.signalCode,
    timedOut,
    wallSeconds,
    cpuSeconds,
    stdout: readFileSync(o.stdoutFile, 'utf8'),
    stderr: o.stderrFile === o.stdoutFile ? '' : readFileSync(o.stderrFile, 'utf8'),
  };
}

/** The last `n` non-empty lines of a text, for error reports. */
export function tail(text: string, n: number): string {
  return text.split('\n').filter((l) => l.trim() !== '').slice(-n).join('\n');
}
