// The Linux calls Node has no binding for, bound once through koffi and shared by the whole project:
// mknod(2), utimensat(2), the l*xattr(2) family, mount(2)/umount2(2), ioctl(2), sync_file_range(2)
// and posix_fadvise(2). The layer applier (worker/apply), COPY/ADD (worker/exec), the device layer
// (worker/device) and loop/ext4 handling (worker/mount) all call these instead of binding their own.
//
// One error rule: a failed call throws ObdkitError whose `code` is the errno name ('ENOENT',
// 'EBUSY', …) and whose context names the call and the path. Callers that treat some errnos as an
// answer rather than a failure test `err.code` (or `xattrRefused(err)`). Two deliberate exceptions:
// lgetxattr returns null for an attribute that is not there, and umount2Syscall reports its errno
// for fire-and-forget teardown paths.
//
// Calls that may wait on I/O of a device this process itself serves (mount, remount, umount, loop
// ioctls) have `…Async` forms that run on a koffi worker thread, so the event loop stays free to
// answer the FUSE requests the kernel sends while the call is in progress.
import koffi from 'koffi';
import { getSystemErrorMap } from 'node:util';
import { ObdkitError, type ErrorContext } from './errors.js';

/** A koffi-bound function: callable synchronously, or on a koffi worker thread through `async`. */
interface Bound<A extends unknown[]> {
  (...args: A): number;
  async: (...args: [...A, (err: unknown, result: number) => void]) => void;
}

interface Libc {
  mknod: Bound<[path: string, mode: number, dev: bigint]>;
  utimensat: Bound<[dirfd: number, path: string, times: Buffer, flags: number]>;
  llistxattr: Bound<[path: string, list: Buffer | null, size: number]>;
  lgetxattr: Bound<[path: string, name: string, value: Buffer | null, size: number]>;
  lsetxattr: Bound<[path: string, name: string, value: Buffer, size: number, flags: number]>;
  fsetxattr: Bound<[fd: number, name: string, value: Buffer, size: number, flags: number]>;
  mount: Bound<[source: string | null, target: string, fstype: string | null, flags: number, data: string | null]>;
  umount2: Bound<[target: string, flags: number]>;
  ioctlPtr: Bound<[fd: number, request: number, arg: Buffer]>;
  ioctlInt: Bound<[fd: number, request: number, arg: number]>;
  syncFileRange: Bound<[fd: number, offset: number, nbytes: number, flags: number]>;
  fadvise: Bound<[fd: number, offset: number, len: number, advice: number]>;
}

let bound: Libc | undefined;

function libc(): Libc {
  if (bound === undefined) {
    const l = koffi.load('libc.so.6');
    const fn = <A extends unknown[]>(decl: string): Bound<A> => l.func(decl) as unknown as Bound<A>;
    bound = {
      mknod: fn('int mknod(const char *path, uint32_t mode, uint64_t dev)'),
      utimensat: fn('int utimensat(int dirfd, const char *path, const uint8_t *times, int flags)'),
      llistxattr: fn('long llistxattr(const char *path, _Out_ uint8_t *list, size_t size)'),
      lgetxattr: fn('long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)'),
      lsetxattr: fn('int lsetxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)'),
      fsetxattr: fn('int fsetxattr(int fd, const char *name, const uint8_t *value, size_t size, int flags)'),
      mount: fn('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
      umount2: fn('int umount2(const char *target, int flags)'),
      // ioctl is variadic in C, and koffi cannot run variadic functions asynchronously. Declared with
      // one fixed third argument it is the same call under the x86-64 and aarch64 calling conventions.
      ioctlPtr: l.func('ioctl', 'int', ['int', 'unsigned long', 'uint8_t *']) as unknown as Bound<[number, number, Buffer]>,
      ioctlInt: l.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']) as unknown as Bound<[number, number, number]>,
      syncFileRange: fn('int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)'),
      fadvise: fn('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)'),
    };
  }
  return bound;
}

// ---------------------------------------------------------------------------------------------
// Errors

let errnoNames: Map<number, [string, string]> | undefined;
let errnoTexts: Map<string, string> | undefined;

/** Name and text of an errno: Node's (libuv's) where it knows it, else the C library's. */
function describeErrno(errno: number): [string, string] {
  errnoNames ??= getSystemErrorMap();
  const known = errnoNames.get(-errno);
  if (known) return known;
  const name = Object.entries(koffi.os.errno).find(([, n]) => n === errno)?.[0] ?? `ERRNO${errno}`;
  const text = (koffi.load('libc.so.6').func('const char *strerror(int errnum)') as (n: number) => string)(errno);
  errnoNames.set(-errno, [name, text]);
  errnoTexts?.set(name, text);
  return [name, text];
}

/** `ENOENT`-style name of an errno value (as Node's own fs errors spell it). */
export function errnoName(errno: number): string {
  return describeErrno(errno)[0];
}

/** The error every call here throws: code = errno name, context = call, path and errno name. */
export function syscallError(call: string, errno: number, context: ErrorContext = {}): ObdkitError {
  const [name, text] = describeErrno(errno);
  return new ObdkitError(name, `${call} failed: ${name} (${text})`, { syscall: call, errno: name, ...context });
}

/**
 * The failure alone, without the path its message starts with — "mount: EBUSY (Device or resource
 * busy)" for an error from this module, the message of any other — for callers that wrap it in an
 * error of their own that names the same path.
 */
export function syscallReason(err: unknown): string {
  if (err instanceof ObdkitError && typeof err.context.syscall === 'string' && typeof err.context.errno === 'string') {
    errnoNames ??= getSystemErrorMap();
    errnoTexts ??= new Map([...errnoNames.values()]);
    const text = errnoTexts.get(err.context.errno);
    return `${err.context.syscall}: ${err.context.errno}${text ? ` (${text})` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Runs `fn` on a koffi worker thread; resolves with its result and the errno it left behind. */
function onWorker<A extends unknown[]>(fn: Bound<A>, ...args: A): Promise<{ result: number; errno: number }> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: number) => {
      // koffi restores the worker thread's errno around this callback only: read it right here.
      const errno = koffi.errno();
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve({ result, errno: result < 0 ? errno : 0 });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Device nodes and timestamps

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** glibc's makedev(): the 64-bit dev_t layout Linux uses for (major, minor). */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

/** Major and minor numbers of an `rdev` as fs.Stats reports it (the low 32 bits of dev_t). */
export function splitDev(rdev: number): { major: number; minor: number } {
  return { major: Math.floor(rdev / 256) & 0xfff, minor: (rdev & 0xff) | ((rdev >> 12) & 0xfff00) };
}

/** Creates a device node or fifo. `type` is one of S_IFCHR, S_IFBLK, S_IFIFO. */
export function mknod(path: string, type: number, perm: number, major = 0, minor = 0): void {
  if (libc().mknod(path, type | (perm & 0o7777), makedev(major, minor)) !== 0) {
    throw syscallError('mknod', koffi.errno(), { file: path });
  }
}

/** A point in time as tar's pax records carry it: whole seconds and nanoseconds. */
export interface Timespec {
  sec: number;
  nsec: number;
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;

/** Sets access and modification times without following a final symlink. */
export function lutimesNs(path: string, atime: Timespec, mtime: Timespec): void {
  const b = Buffer.alloc(32);
  b.writeBigInt64LE(BigInt(atime.sec), 0);
  b.writeBigInt64LE(BigInt(atime.nsec), 8);
  b.writeBigInt64LE(BigInt(mtime.sec), 16);
  b.writeBigInt64LE(BigInt(mtime.nsec), 24);
  if (libc().utimensat(AT_FDCWD, path, b, AT_SYMLINK_NOFOLLOW) !== 0) {
    throw syscallError('utimensat', koffi.errno(), { file: path });
  }
}

// ---------------------------------------------------------------------------------------------
// Extended attributes (the l* forms never follow a final symlink)

const ENODATA = 61;
const ENOTSUP = 95;
const ERANGE = 34;

/**
 * True when `err` says the filesystem or the inode type does not take this attribute at all:
 * no xattr support (ENOTSUP), or a namespace refused here (EPERM: user.* on a symlink or device
 * node, trusted.* without the capability). Callers that copy attributes treat that as "skip".
 */
export function xattrRefused(err: unknown): boolean {
  return err instanceof ObdkitError && (err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP' || err.code === 'EPERM');
}

/** Names of the extended attributes of `path`. */
export function llistxattr(path: string): string[] {
  const c = libc();
  for (let attempt = 0; ; attempt++) {
    const size = c.llistxattr(path, null, 0);
    if (size < 0) throw syscallError('llistxattr', koffi.errno(), { file: path });
    if (size === 0) return [];
    // Room to spare on the second try: the list grew between the two calls.
    const names = Buffer.alloc(attempt === 0 ? size : Math.max(size * 2, 65536));
    const got = c.llistxattr(path, names, names.length);
    if (got >= 0) return names.toString('latin1', 0, got).split('\0').filter((n) => n !== '');
    const e = koffi.errno();
    if (e !== ERANGE || attempt > 0) throw syscallError('llistxattr', e, { file: path });
  }
}

/** Value of one extended attribute; null when it is not set (or the filesystem has none). */
export function lgetxattr(path: string, name: string): Buffer | null {
  const c = libc();
  for (let attempt = 0; ; attempt++) {
    const n = c.lgetxattr(path, name, null, 0);
    if (n < 0) {
      const e = koffi.errno();
      if (e === ENODATA || e === ENOTSUP) return null;
      throw syscallError('lgetxattr', e, { file: path, field: name });
    }
    const value = Buffer.alloc(attempt === 0 ? n : Math.max(n * 2, 65536));
    const got = c.lgetxattr(path, name, value, value.length);
    if (got >= 0) return value.subarray(0, got);
    const e = koffi.errno();
    if (e === ENODATA) return null;
    if (e !== ERANGE || attempt > 0) throw syscallError('lgetxattr', e, { file: path, field: name });
  }
}

/** Sets one extended attribute on the inode itself. */
export function lsetxattr(path: string, name: string, value: Buffer): void {
  if (libc().lsetxattr(path, name, value, value.length, 0) !== 0) {
    throw syscallError('lsetxattr', koffi.errno(), { file: path, field: name });
  }
}

/**
 * Sets one extended attribute, or returns false when this inode or filesystem refuses it
 * (`xattrRefused`): what tar extraction and COPY do with an attribute not representable here.
 */
export function lsetxattrIfAccepted(path: string, name: string, value: Buffer): boolean {
  try {
    lsetxattr(path, name, value);
    return true;
  } catch (err) {
    if (xattrRefused(err)) return false;
    throw err;
  }
}

/** Sets one extended attribute on an open file or directory; `label` names it in errors. */
export function fsetxattr(fd: number, name: string, value: Buffer, label: string): void {
  if (libc().fsetxattr(fd, name, value, value.length, 0) !== 0) {
    throw syscallError('fsetxattr', koffi.errno(), { file: label, field: name });
  }
}

// ---------------------------------------------------------------------------------------------
// Mounts

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_REMOUNT = 32;
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;

/** mount(2). `source`/`fstype`/`data` may be null (a remount needs neither source nor type). */
export function mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): void {
  if (libc().mount(source, target, fstype, flags, data) !== 0) {
    throw syscallError('mount', koffi.errno(), { file: target, ...(fstype ? { fstype } : {}), ...(source ? { device: source } : {}) });
  }
}

/** mount(2) on a koffi worker thread. */
export async function mountAsync(
  source: string | null, target: string, fstype: string | null, flags: number, data: string | null,
): Promise<void> {
  const r = await onWorker(libc().mount, source, target, fstype, flags, data);
  if (r.result !== 0) {
    throw syscallError('mount', r.errno, { file: target, ...(fstype ? { fstype } : {}), ...(source ? { device: source } : {}) });
  }
}

/** umount2(2). */
export function umount2(target: string, flags: number): void {
  if (libc().umount2(target, flags) !== 0) throw syscallError('umount2', koffi.errno(), { file: target });
}

/** umount2(2) on a koffi worker thread. */
export async function umount2Async(target: string, flags: number): Promise<void> {
  const r = await onWorker(libc().umount2, target, flags);
  if (r.result !== 0) throw syscallError('umount2', r.errno, { file: target });
}

/** Same as `mount`; the name the FUSE export uses. */
export const mountSyscall = mount;

/** umount2(2) that reports instead of throwing: the errno, 0 on success (for best-effort teardown). */
export function umount2Syscall(target: string, flags: number): number {
  return libc().umount2(target, flags) === 0 ? 0 : koffi.errno();
}

// ---------------------------------------------------------------------------------------------
// ioctl

/** ioctl(2) with a pointer argument (a struct in `arg`); returns the call's non-negative result. */
export function ioctl(fd: number, request: number, arg: Buffer | number, label: string): number {
  const c = libc();
  const r = typeof arg === 'number' ? c.ioctlInt(fd, request, arg) : c.ioctlPtr(fd, request, arg);
  if (r < 0) throw syscallError(`ioctl 0x${request.toString(16)}`, koffi.errno(), { file: label });
  return r;
}

/** ioctl(2) on a koffi worker thread. */
export async function ioctlAsync(fd: number, request: number, arg: Buffer | number, label: string): Promise<number> {
  const c = libc();
  const r = typeof arg === 'number' ? await onWorker(c.ioctlInt, fd, request, arg) : await onWorker(c.ioctlPtr, fd, request, arg);
  if (r.result < 0) throw syscallError(`ioctl 0x${request.toString(16)}`, r.errno, { file: label });
  return r.result;
}

// ---------------------------------------------------------------------------------------------
// Page-cache hints (best effort: errors are ignored)

export const SYNC_FILE_RANGE_WRITE = 2;
export const POSIX_FADV_RANDOM = 1;

/** Turns off readahead for this open file (not for other descriptors of the same file). */
export function adviseRandom(fd: number): void {
  libc().fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
}

/** Starts writeback of a byte range without waiting for it. */
export function startWriteback(fd: number, offset: number, length: number): void {
  libc().syncFileRange(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}
