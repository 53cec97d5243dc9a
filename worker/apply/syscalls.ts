// The few Linux calls Node does not expose, bound through koffi: mknod(2) for device nodes and
// fifos, utimensat(2) for nanosecond timestamps on any inode type (symlinks included), and
// lsetxattr(2) for extended attributes such as security.capability. Everything else in the
// layer applier uses node:fs. All calls are synchronous and fast (single syscalls).
import koffi from 'koffi';
import { ObdkitError } from '../../src/util/errors.js';

interface Libc {
  mknod: (path: string, mode: number, dev: bigint) => number;
  utimensat: (dirfd: number, path: string, times: Buffer, flags: number) => number;
  lsetxattr: (path: string, name: string, value: Buffer, size: number, flags: number) => number;
  lgetxattr: (path: string, name: string, value: Buffer | null, size: number) => number;
}

let bound: Libc | undefined;

function libc(): Libc {
  if (bound === undefined) {
    const l = koffi.load('libc.so.6');
    bound = {
      mknod: l.func('int mknod(const char *path, uint32_t mode, uint64_t dev)') as Libc['mknod'],
      utimensat: l.func('int utimensat(int dirfd, const char *path, const uint8_t *times, int flags)') as Libc['utimensat'],
      lsetxattr: l.func(
        'int lsetxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)',
      ) as Libc['lsetxattr'],
      lgetxattr: l.func(
        'long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)',
      ) as Libc['lgetxattr'],
    };
  }
  return bound;
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

const ENOTSUP = 95;
const ENODATA = 61;

/** A point in time as tar's pax records carry it: whole seconds and nanoseconds. */
export interface Timespec {
  sec: number;
  nsec: number;
}

/** glibc's makedev(): the 64-bit dev_t layout Linux uses for (major, minor). */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

function fail(op: string, path: string, errno: number, extra: Record<string, string | number> = {}): ObdkitError {
  return new ObdkitError('ESYSCALL', `${op} failed with errno ${errno}`, { file: path, errno, ...extra });
}

/** Creates a device node or fifo. `type` is one of S_IFCHR, S_IFBLK, S_IFIFO. */
export function mknod(path: string, type: number, perm: number, major = 0, minor = 0): void {
  if (libc().mknod(path, type | (perm & 0o7777), makedev(major, minor)) !== 0) {
    throw fail('mknod', path, koffi.errno());
  }
}

/** Sets access and modification times without following a final symlink. */
export function lutimesNs(path: string, atime: Timespec, mtime: Timespec): void {
  const b = Buffer.alloc(32);
  b.writeBigInt64LE(BigInt(atime.sec), 0);
  b.writeBigInt64LE(BigInt(atime.nsec), 8);
  b.writeBigInt64LE(BigInt(mtime.sec), 16);
  b.writeBigInt64LE(BigInt(mtime.nsec), 24);
  if (libc().utimensat(AT_FDCWD, path, b, AT_SYMLINK_NOFOLLOW) !== 0) {
    throw fail('utimensat', path, koffi.errno());
  }
}

/**
 * Sets one extended attribute on the inode itself (never through a symlink). Returns false when
 * the filesystem or the inode type refuses the namespace (user.* on a symlink, no xattr support),
 * which tar extraction treats as "not representable here" rather than as a failure.
 */
export function lsetxattr(path: string, name: string, value: Buffer): boolean {
  if (libc().lsetxattr(path, name, value, value.length, 0) === 0) return true;
  const e = koffi.errno();
  const EPERM = 1;
  if (e === ENOTSUP || e === EPERM) return false;
  throw fail('lsetxattr', path, e, { field: name });
}

/** Reads one extended attribute of the inode itself; null when it is not set. */
export function lgetxattr(path: string, name: string): Buffer | null {
  const c = libc();
  const n = c.lgetxattr(path, name, null, 0);
  if (n < 0) {
    const e = koffi.errno();
    if (e === ENODATA || e === ENOTSUP) return null;
    throw fail('lgetxattr', path, e, { field: name });
  }
  const value = Buffer.alloc(n);
  const got = c.lgetxattr(path, name, value, n);
  if (got < 0) throw fail('lgetxattr', path, koffi.errno(), { field: name });
  return value.subarray(0, got);
}
