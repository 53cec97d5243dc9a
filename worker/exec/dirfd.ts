// Race-free directory handles inside a root: openat2(2) with RESOLVE_IN_ROOT resolves a path the
// way root-path.ts does (symlinks as if the root were `/`, `..` clamped), but atomically in the
// kernel, so a component swapped for a symlink while we work cannot redirect us (CVE-2018-15664
// class). Entries are then created through `/proc/self/fd/<fd>/<name>`, which names exactly the
// directory that was opened. On kernels without openat2 (< 5.6) callers fall back to plain paths.
import koffi from 'koffi';
import { closeSync, constants, openSync } from 'node:fs';
import { ObdkitError } from '../../src/util/errors.js';

const SYS_openat2 = 437; // x86_64 and aarch64 share this number
const O_PATH = 0o10000000;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_IN_ROOT = 0x10;
const ENOSYS = 38;

type Openat2 = (nr: number, dirfd: number, path: string, how: Buffer, size: number) => number;
type Close = (fd: number) => number;

let openat2Fn: Openat2 | null | undefined;
let closeFn: Close | undefined;

function openat2(): Openat2 | null {
  if (openat2Fn === undefined) {
    try {
      const lib = koffi.load('libc.so.6');
      openat2Fn = lib.func('long syscall(long nr, int dirfd, const char *path, void *how, size_t size)') as Openat2;
      // Closed with libc too: Node's fs.close on a descriptor it did not open warns in worker threads.
      closeFn = lib.func('int close(int fd)') as Close;
    } catch {
      openat2Fn = null;
    }
  }
  return openat2Fn;
}

let supported: boolean | undefined;

/** A directory inside a root, held open; `path(name)` names an entry of exactly that directory. */
export interface DirHandle {
  readonly fd: number;
  path(name?: string): string;
  close(): void;
}

/**
 * Opens `inner` (a directory path inside `root`) with RESOLVE_IN_ROOT. Returns null where openat2
 * is unavailable; throws ENOENT/ENOTDIR-coded errors like open(2) otherwise.
 */
export function openDirInRoot(root: string, inner: string, opts: { readable?: boolean } = {}): DirHandle | null {
  if (supported === false) return null;
  const fn = openat2();
  if (fn === null) {
    supported = false;
    return null;
  }
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const how = Buffer.alloc(24);
    const flags = (opts.readable ? constants.O_RDONLY : O_PATH) | constants.O_DIRECTORY | 0o2000000; /* O_CLOEXEC */
    how.writeBigUInt64LE(BigInt(flags), 0);
    how.writeBigUInt64LE(0n, 8);
    how.writeBigUInt64LE(BigInt(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), 16);
    const rel = inner.replace(/^\/+/, '') || '.';
    const fd = fn(SYS_openat2, rootFd, rel, how, how.length);
    if (fd < 0) {
      const errno = koffi.errno();
      if (errno === ENOSYS) {
        supported = false;
        return null;
      }
      throw new ObdkitError(errno === 2 ? 'ENOENT' : errno === 20 ? 'ENOTDIR' : 'EOPENAT2', `cannot open directory ${inner} in root (errno ${errno})`, {
        file: inner,
        errno,
      });
    }
    supported = true;
    return {
      fd,
      path: (name?: string) => (name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`),
      close: () => void closeFn!(fd),
    };
  } finally {
    closeSync(rootFd);
  }
}
