// Leftover mounts of a bench's scratch directories: buildkitd can leave overlay mounts behind, and
// not only below its --root (while exporting it mounts snapshots at /tmp/containerd-mount*, with
// lowerdirs inside the root); a killed build can leave ext4 or FUSE mounts. Everything mounted below a
// directory, or built from layers inside it, is unmounted deepest first, lazily if a plain unmount is
// refused, before the directory is removed. Neighbours: buildkitd.ts and obdkit-build.ts.
import { readFileSync } from 'node:fs';
import { execa } from 'execa';

/** Undoes the octal escapes /proc/self/mountinfo uses for spaces and other bytes in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points at or below `dir`, or whose source or options name a path inside it; deepest first. */
export function mountsUnder(dir: string): string[] {
  const base = dir.replace(/\/+$/, '');
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const path = unescapeMountPath(mp);
    // The scratch paths hold no characters mountinfo escapes, so the raw line can be searched as is.
    if (path === base || path.startsWith(`${base}/`) || line.includes(`${base}/`)) out.push(path);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or below `dir`; returns how many mounts it removed. */
export async function unmountUnder(dir: string): Promise<number> {
  let removed = 0;
  // A mount can be stacked several times on one point, so go round until nothing is left.
  for (let round = 0; round < 5; round++) {
    const mps = mountsUnder(dir);
    if (mps.length === 0) break;
    for (const mp of mps) {
      const plain = await execa('umount', [mp], { reject: false });
      if (plain.exitCode !== 0) await execa('umount', ['-l', mp], { reject: false });
      removed++;
    }
  }
  return removed;
}
