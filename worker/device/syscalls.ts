// mount(2), umount2(2), sync_file_range(2) and posix_fadvise(2) through koffi: Node has no binding
// for them. The FUSE mount needs the /dev/fuse descriptor of this very process in its options, so the
// mount(8) binary cannot do it; sync_file_range starts writeback of the upper data early and
// posix_fadvise keeps small random reads of it from dragging in readahead (see shared-upper.ts).
import koffi from 'koffi';
import { ObdkitError } from '../../src/util/errors.js';

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MNT_FORCE = 1;
export const MNT_DETACH = 2;

export const SYNC_FILE_RANGE_WRITE = 2;
export const POSIX_FADV_RANDOM = 1;

type MountFn = (source: string, target: string, fstype: string, flags: number, data: string) => number;
type Umount2Fn = (target: string, flags: number) => number;
type SyncFileRangeFn = (fd: number, offset: number, nbytes: number, flags: number) => number;
type FadviseFn = (fd: number, offset: number, len: number, advice: number) => number;

interface Libc {
  mount: MountFn;
  umount2: Umount2Fn;
  syncFileRange: SyncFileRangeFn;
  fadvise: FadviseFn;
}

let fns: Libc | undefined;

function libc(): Libc {
  if (!fns) {
    const lib = koffi.load('libc.so.6');
    fns = {
      mount: lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)') as MountFn,
      umount2: lib.func('int umount2(const char *target, int flags)') as Umount2Fn,
      syncFileRange: lib.func('int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)') as SyncFileRangeFn,
      fadvise: lib.func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)') as FadviseFn,
    };
  }
  return fns;
}

/** Turns off readahead for this open file (not for other descriptors of the same file). */
export function adviseRandom(fd: number): void {
  libc().fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
}

/** Starts writeback of a byte range without waiting for it; best effort (errors are ignored). */
export function startWriteback(fd: number, offset: number, length: number): void {
  libc().syncFileRange(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

export function mountSyscall(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (libc().mount(source, target, fstype, flags, data) !== 0) {
    const errno = koffi.errno();
    throw new ObdkitError('EMOUNT', `mount(2) of ${fstype} failed with errno ${errno}`, { file: target, errno });
  }
}

/** Returns the errno (0 on success) so callers can treat EINVAL/ENOENT ("not mounted") as done. */
export function umount2Syscall(target: string, flags: number): number {
  return libc().umount2(target, flags) === 0 ? 0 : koffi.errno();
}
