// FIFOs and device nodes met in COPY --from a stage or in an ADDed tar, made with mknod(2) from
// src/util/syscalls.ts. Calling it in-process (rather than the mknod CLI) lets the path be a
// `/proc/self/fd/<fd>/name` handle path from dirfd.ts, which a child process could not use.
import { S_IFBLK, S_IFCHR, S_IFIFO, mknod, splitDev } from '../../src/util/syscalls.js';

export { splitDev };

export function makeNode(path: string, kind: 'fifo' | 'char' | 'block', perm: number, major = 0, minor = 0): void {
  mknod(path, kind === 'fifo' ? S_IFIFO : kind === 'char' ? S_IFCHR : S_IFBLK, perm, major, minor);
}
