// The block daemon must never run inside a memory-limited cgroup (v1 here): reclaim in such a
// cgroup waits on writeback of pages that only this daemon can complete, a kernel deadlock that
// only aborting the FUSE connection ends. Checked once at start; refuses to serve if violated.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ObdkitError } from '../../src/util/errors.js';

/** The kernel reports "no limit" as a page-aligned huge number; anything below 2^60 is a limit. */
const UNLIMITED_FLOOR = 2 ** 60;

export interface MemoryLimit {
  cgroup: string;
  limitBytes: number;
}

/** Finds the tightest memory limit on this process's cgroup path (v1 and v2), or null. */
export function findMemoryLimit(procSelfCgroup = '/proc/self/cgroup', root = '/sys/fs/cgroup'): MemoryLimit | null {
  let text: string;
  try {
    text = readFileSync(procSelfCgroup, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    const isV1 = controllers!.split(',').includes('memory');
    const isV2 = controllers === '';
    if (!isV1 && !isV2) continue;
    const base = isV1 ? join(root, 'memory') : join(root, isV2 && existsDir(join(root, 'unified')) ? 'unified' : '');
    const file = isV1 ? 'memory.limit_in_bytes' : 'memory.max';
    const parts = path.split('/').filter(Boolean);
    for (let depth = parts.length; depth >= 0; depth--) {
      const dir = join(base, ...parts.slice(0, depth));
      let value: string;
      try {
        value = readFileSync(join(dir, file), 'utf8').trim();
      } catch {
        continue;
      }
      if (value === 'max') continue;
      const n = Number(value);
      if (Number.isFinite(n) && n < UNLIMITED_FLOOR) return { cgroup: dir, limitBytes: n };
    }
  }
  return null;
}

function existsDir(p: string): boolean {
  return existsSync(join(p, 'cgroup.procs'));
}

export function assertNoMemoryLimit(): void {
  const lim = findMemoryLimit();
  if (lim && process.env.OBDKIT_ALLOW_MEMCG !== '1') {
    throw new ObdkitError(
      'EMEMCG',
      `the block device daemon runs in a memory-limited cgroup (${lim.limitBytes} bytes); loop over FUSE deadlocks under memcg reclaim. Run it in an unlimited cgroup.`,
      { file: lim.cgroup },
    );
  }
}
