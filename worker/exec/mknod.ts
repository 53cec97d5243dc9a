// mknod(2) through koffi, for FIFOs and device nodes met in COPY --from a stage or in an ADDed tar.
// Node has no binding; calling it in-process (rather than the mknod CLI) lets the path be a
// `/proc/self/fd/<fd>/name` handle path from dirfd.ts, which a child process could not use.
import koffi from 'koffi';
import { ObdkitError } from '../../src/util/errors.js';

const S_IFIFO = 0o010000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

type MknodFn = (path: string, mode: number, dev: bigint) => number;
let fn: MknodFn | undefined;

function mknodFn(): MknodFn {
  fn ??= koffi.load('libc.so.6').func('int mknod(const char *path, uint32_t mode, uint64_t dev)') as MknodFn;
  return fn;
}

/** Linux's dev_t encoding (gnu_dev_makedev). */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

export function makeNode(path: string, kind: 'fifo' | 'char' | 'block', perm: number, major = 0, minor = 0): void {
  const type = kind === 'fifo' ? S_IFIFO : kind === 'char' ? S_IFCHR : S_IFBLK;
  if (mknodFn()(path, type | (perm & 0o7777), makedev(major, minor)) !== 0) {
    throw new ObdkitError('EMKNOD', `mknod failed with errno ${koffi.errno()}`, { file: path, errno: koffi.errno() });
  }
}

/** Major and minor numbers of an `rdev` as fs.Stats reports it. */
export function splitDev(rdev: number): { major: number; minor: number } {
  return { major: Math.floor(rdev / 256) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
}
