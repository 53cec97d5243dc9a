// The layer applier's Linux calls beyond node:fs (mknod, utimensat, l*xattr) come from the
// project-wide binding in src/util/syscalls.ts; these names stay importable from here.
export {
  S_IFBLK,
  S_IFCHR,
  S_IFIFO,
  lgetxattr,
  lsetxattr,
  lsetxattrIfAccepted,
  lutimesNs,
  makedev,
  mknod,
  xattrRefused,
  type Timespec,
} from '../../src/util/syscalls.js';
