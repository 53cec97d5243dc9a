// Shared setup for device tests: the skip rule (root + /dev/fuse + /dev/loop-control), one run dir
// for all device tests so a crashed earlier run is cleaned at start, temp dirs, and small process
// helpers. Tests touch the mounted filesystems only through child processes: the test process also
// serves the FUSE device, and its own threads must stay free.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { listMounts } from '../../worker/mount/ext4.js';
import { listLoops } from '../../worker/mount/loop.js';
import { cleanupStale } from '../../worker/mount/teardown.js';

// One run dir per test process under a common parent: a crashed earlier run (its pid gone) is cleaned at
// start, while a run going on at the same time in another checkout is left alone.
const RUN_PARENT = join(tmpdir(), 'obdkit-device-test-run');
export const TEST_RUN_DIR = join(RUN_PARENT, String(process.pid));

export function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'device tests need root (mount, losetup)';
  if (!existsSync('/dev/fuse')) return 'device tests need /dev/fuse';
  if (!existsSync('/dev/loop-control')) return 'device tests need /dev/loop-control';
  return false;
}

export { oracleDir } from '../helpers/oracle.js';

export function tempDir(prefix: string): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), `obdkit-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function cleanAll(): Promise<void> {
  mkdirSync(TEST_RUN_DIR, { recursive: true });
  for (const name of readdirSync(RUN_PARENT)) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || (pid !== process.pid && alive(pid))) continue;
    await cleanupStale(join(RUN_PARENT, name));
  }
}

/**
 * Nothing of ours left: no mount under the run dir, no loop device over a file there. Only this run
 * dir counts: other obdkit processes on the machine may be serving devices of their own.
 */
export async function leftovers(runDir = TEST_RUN_DIR): Promise<string[]> {
  const out: string[] = [];
  for (const m of await listMounts()) if (m.target.startsWith(runDir)) out.push(`mount ${m.target} ${m.fstype}`);
  for (const l of await listLoops()) if (l.backingFile.startsWith(runDir)) out.push(`loop ${l.device} ${l.backingFile}`);
  return out;
}

export async function sh(script: string, timeoutMs = 120_000): Promise<string> {
  const r = await execa('bash', ['-euo', 'pipefail', '-c', script], { timeout: timeoutMs });
  return r.stdout;
}
