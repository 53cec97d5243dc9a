// Extended attributes for COPY and ADD, which must carry them (security.capability on binaries,
// user.* set by build tools): whole-inode read and write on top of the l*xattr/fsetxattr calls in
// src/util/syscalls.ts. The l* forms never follow a symlink, so a link's own attributes are used.
// Attributes the destination refuses (no xattr support, a namespace not allowed on that inode or
// without the privilege) are skipped, as tar extraction does; any other failure throws.
import { fsetxattr, lgetxattr, llistxattr, lsetxattr, xattrRefused } from '../../src/util/syscalls.js';

/** All extended attributes of `path` (not following a final symlink); empty where unsupported. */
export function readXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let names: string[];
  try {
    names = llistxattr(path);
  } catch (err) {
    if (xattrRefused(err)) return out;
    throw err;
  }
  for (const name of names) {
    // Removed between listing and reading: simply not there any more.
    const value = lgetxattr(path, name);
    if (value !== null) out.set(name, value);
  }
  return out;
}

/** Sets attributes on `path`; ones the filesystem refuses are skipped. */
export function writeXattrs(path: string, attrs: Map<string, Buffer>): void {
  setAll(attrs, (name, value) => lsetxattr(path, name, value));
}

/** Like writeXattrs, on an open file or directory; `label` names it in errors. */
export function writeXattrsFd(fd: number, attrs: Map<string, Buffer>, label: string): void {
  setAll(attrs, (name, value) => fsetxattr(fd, name, value, label));
}

function setAll(attrs: Map<string, Buffer>, set: (name: string, value: Buffer) => void): void {
  for (const [name, value] of attrs) {
    try {
      set(name, value);
    } catch (err) {
      if (!xattrRefused(err)) throw err;
    }
  }
}
