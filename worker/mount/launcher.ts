// Starts and stops the background device daemon (daemon.ts) for the CLI and for tests: spawns it
// detached in its own session with a log file under the run dir, waits for its readiness line, and
// on `umount` finds it through the state records, signals it and waits until its mounts are gone.
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { ObdkitError } from '../../src/util/errors.js';
import type { DaemonReply, DaemonRequest } from './daemon.js';
import { isMounted } from './ext4.js';
import { listDeviceIds, pidAlive, readState } from './state.js';
import { cleanupStale } from './teardown.js';

export interface StartedDaemon {
  pid: number;
  device: string;
  mountpoint: string;
  id: string;
}

export async function startDaemon(runDir: string, req: DaemonRequest, timeoutMs = 60_000): Promise<StartedDaemon> {
  mkdirSync(runDir, { recursive: true });
  await cleanupStale(runDir);
  const reqDir = mkdtempSync(join(runDir, 'req-'));
  const reqFile = join(reqDir, 'request.json');
  writeFileSync(reqFile, JSON.stringify({ ...req, mountpoint: resolve(req.mountpoint) }));
  const logFd = openSync(join(runDir, 'daemon.log'), 'a');
  const script = new URL('./daemon.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [script, runDir, reqFile], { detached: true, stdio: ['ignore', 'pipe', logFd] });
  closeSync(logFd);
  try {
    const reply = await new Promise<DaemonReply>((res, rej) => {
      const timer = setTimeout(() => rej(new ObdkitError('ETIMEDOUT', `device daemon not ready after ${timeoutMs} ms`, { file: runDir })), timeoutMs);
      const rl = createInterface({ input: child.stdout! });
      rl.once('line', (line) => {
        clearTimeout(timer);
        try {
          res(JSON.parse(line) as DaemonReply);
        } catch {
          rej(new ObdkitError('EDAEMON', `unexpected daemon output: ${line}`));
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        rej(new ObdkitError('EDAEMON', `device daemon exited with code ${code} before it was ready; see ${join(runDir, 'daemon.log')}`));
      });
    });
    if (!reply.ok) throw new ObdkitError('EDAEMON', reply.error, { file: req.mountpoint });
    return { pid: reply.pid, device: reply.handle.device, mountpoint: reply.handle.mountpoint, id: reply.handle.id };
  } finally {
    child.stdout?.destroy();
    child.unref();
    rmSync(reqDir, { recursive: true, force: true });
  }
}

/** Tears down the device mounted at `mountpoint`, whether its daemon is alive or crashed. */
export async function stopDaemon(runDir: string, mountpoint: string, timeoutMs = 60_000): Promise<void> {
  const mp = resolve(mountpoint);
  const state = listDeviceIds(runDir)
    .map((id) => readState(runDir, id))
    .find((s) => s?.mountpoint === mp);
  if (!state) {
    await cleanupStale(runDir);
    if (await isMounted(mp)) throw new ObdkitError('ENOENT', 'no obdkit device is mounted here', { file: mp });
    return;
  }
  if (pidAlive(state.pid)) {
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + timeoutMs;
    while (pidAlive(state.pid)) {
      if (Date.now() > deadline) throw new ObdkitError('ETIMEDOUT', `device daemon ${state.pid} did not stop`, { file: mp });
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  await cleanupStale(runDir);
  if (await isMounted(mp)) throw new ObdkitError('EBUSY', 'still mounted after teardown', { file: mp });
}
