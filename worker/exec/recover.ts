// Start-up recovery for RUN steps: a daemon that died mid-step leaves containers, overlay mounts
// (writable bind mounts) and bundle directories under its state root. This removes exactly those,
// found by the bundle path runc recorded, and nothing else runc knows about.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { runcDelete, type RuncOptions } from './runc.js';

export interface RecoverReport {
  containers: string[];
  unmounted: string[];
  bundles: string[];
}

export async function recoverStaleSteps(stateRoot: string, o: RuncOptions = {}): Promise<RecoverReport> {
  const bundles = join(stateRoot, 'bundles');
  const report: RecoverReport = { containers: [], unmounted: [], bundles: [] };
  const r = await execa(o.runc ?? 'runc', [...(o.root ? ['--root', o.root] : []), 'list', '--format', 'json'], { reject: false });
  const text = r.exitCode === 0 ? String(r.stdout).trim() : '';
  const list = text && text !== 'null' ? (JSON.parse(text) as Array<{ id: string; bundle: string }>) : [];
  for (const c of list) {
    if (c.bundle === bundles || c.bundle.startsWith(bundles + '/')) {
      await runcDelete(o, c.id);
      report.containers.push(c.id);
    }
  }
  // Deepest mount points first; /proc/self/mounts escapes spaces as \040.
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((m) => m.startsWith(bundles + '/'))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    await execa('umount', [m], { reject: false });
    report.unmounted.push(m);
  }
  let names: string[] = [];
  try {
    names = readdirSync(bundles);
  } catch {
    /* no bundles yet */
  }
  for (const n of names) {
    rmSync(join(bundles, n), { recursive: true, force: true });
    report.bundles.push(n);
  }
  return report;
}
