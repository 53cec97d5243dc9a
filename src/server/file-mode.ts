// Go os.FileMode bits as fsutil puts them on the wire, and conversion to and from POSIX st_mode.
// Used by the FileSync receiver (client → daemon) and the FileSend sender (daemon → client).

export const GO_MODE_DIR = 0x80000000;
export const GO_MODE_SYMLINK = 1 << 27;
export const GO_MODE_DEVICE = 1 << 26;
export const GO_MODE_NAMED_PIPE = 1 << 25;
export const GO_MODE_SOCKET = 1 << 24;
export const GO_MODE_SETUID = 1 << 23;
export const GO_MODE_SETGID = 1 << 22;
export const GO_MODE_CHAR_DEVICE = 1 << 21;
export const GO_MODE_STICKY = 1 << 20;
export const GO_MODE_IRREGULAR = 1 << 19;

const TYPE_BITS =
  GO_MODE_DIR | GO_MODE_SYMLINK | GO_MODE_DEVICE | GO_MODE_NAMED_PIPE | GO_MODE_SOCKET | GO_MODE_CHAR_DEVICE | GO_MODE_IRREGULAR;

export type EntryKind = 'dir' | 'symlink' | 'file' | 'fifo' | 'device' | 'chardevice' | 'socket' | 'irregular';

export function goModeKind(mode: number): EntryKind {
  if ((mode & GO_MODE_DIR) !== 0) return 'dir';
  if ((mode & GO_MODE_SYMLINK) !== 0) return 'symlink';
  if ((mode & GO_MODE_NAMED_PIPE) !== 0) return 'fifo';
  if ((mode & GO_MODE_SOCKET) !== 0) return 'socket';
  if ((mode & GO_MODE_DEVICE) !== 0) return (mode & GO_MODE_CHAR_DEVICE) !== 0 ? 'chardevice' : 'device';
  if ((mode & GO_MODE_IRREGULAR) !== 0) return 'irregular';
  return 'file';
}

export function isGoRegular(mode: number): boolean {
  return (mode & TYPE_BITS) === 0;
}

/** Permission bits plus setuid/setgid/sticky in POSIX form (what chmod takes). */
export function goModeToPosixPerm(mode: number): number {
  let perm = mode & 0o777;
  if ((mode & GO_MODE_SETUID) !== 0) perm |= 0o4000;
  if ((mode & GO_MODE_SETGID) !== 0) perm |= 0o2000;
  if ((mode & GO_MODE_STICKY) !== 0) perm |= 0o1000;
  return perm;
}

const S_IFMT = 0o170000;

/** POSIX st_mode (from fs.lstat) to Go FileMode bits, as a uint32. */
export function posixToGoMode(stMode: number): number {
  let mode = stMode & 0o777;
  if (stMode & 0o4000) mode |= GO_MODE_SETUID;
  if (stMode & 0o2000) mode |= GO_MODE_SETGID;
  if (stMode & 0o1000) mode |= GO_MODE_STICKY;
  switch (stMode & S_IFMT) {
    case 0o040000:
      mode |= GO_MODE_DIR;
      break;
    case 0o120000:
      mode |= GO_MODE_SYMLINK;
      break;
    case 0o010000:
      mode |= GO_MODE_NAMED_PIPE;
      break;
    case 0o140000:
      mode |= GO_MODE_SOCKET;
      break;
    case 0o060000:
      mode |= GO_MODE_DEVICE;
      break;
    case 0o020000:
      mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE;
      break;
    default:
      break;
  }
  return mode >>> 0;
}
