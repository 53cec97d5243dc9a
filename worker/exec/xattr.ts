// Extended attributes through koffi: Node has no binding for them, and COPY must carry them
// (security.capability on binaries, user.* set by build tools). The l* variants never follow a
// symlink, so attributes are read from and written to the link itself.
import koffi from 'koffi';
import { ObdkitError } from '../../src/util/errors.js';

interface XattrLib {
  llistxattr: (path: string, list: Buffer | null, size: number) => number;
  lgetxattr: (path: string, name: string, value: Buffer | null, size: number) => number;
  lsetxattr: (path: string, name: string, value: Buffer, size: number, flags: number) => number;
  fsetxattr: (fd: number, name: string, value: Buffer, size: number, flags: number) => number;
}

let lib: XattrLib | undefined;

function libc(): XattrLib {
  if (lib === undefined) {
    const l = koffi.load('libc.so.6');
    lib = {
      llistxattr: l.func('long llistxattr(const char *path, _Out_ uint8_t *list, size_t size)') as XattrLib['llistxattr'],
      lgetxattr: l.func(
        'long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)',
      ) as XattrLib['lgetxattr'],
      lsetxattr: l.func(
        'int lsetxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)',
      ) as XattrLib['lsetxattr'],
      fsetxattr: l.func('int fsetxattr(int fd, const char *name, const uint8_t *value, size_t size, int flags)') as XattrLib['fsetxattr'],
    };
  }
  return lib;
}

const ENOTSUP = 95;
const ENODATA = 61;
const ERANGE = 34;
const EPERM = 1;

/** All extended attributes of `path` (not following a final symlink); empty where unsupported. */
export function readXattrs(path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const c = libc();
  let size = c.llistxattr(path, null, 0);
  if (size < 0) {
    if (koffi.errno() === ENOTSUP) return out;
    throw fail('llistxattr', path, koffi.errno());
  }
  if (size === 0) return out;
  let names = Buffer.alloc(size);
  size = c.llistxattr(path, names, names.length);
  if (size < 0) {
    // Grew between the calls: ask once more with room to spare.
    if (koffi.errno() !== ERANGE) throw fail('llistxattr', path, koffi.errno());
    names = Buffer.alloc(65536);
    size = c.llistxattr(path, names, names.length);
    if (size < 0) throw fail('llistxattr', path, koffi.errno());
  }
  for (const name of names.toString('latin1', 0, size).split('\0')) {
    if (name === '') continue;
    const n = c.lgetxattr(path, name, null, 0);
    if (n < 0) {
      if (koffi.errno() === ENODATA) continue;
      throw fail('lgetxattr', path, koffi.errno(), name);
    }
    const value = Buffer.alloc(n);
    const got = c.lgetxattr(path, name, value, n);
    if (got < 0) throw fail('lgetxattr', path, koffi.errno(), name);
    out.set(name, value.subarray(0, got));
  }
  return out;
}

/** Sets attributes on `path`; names the filesystem refuses (ENOTSUP) are skipped. */
export function writeXattrs(path: string, attrs: Map<string, Buffer>): void {
  setAll(attrs, path, (name, value) => libc().lsetxattr(path, name, value, value.length, 0));
}

/** Like writeXattrs, on an open file or directory. */
export function writeXattrsFd(fd: number, attrs: Map<string, Buffer>, label: string): void {
  setAll(attrs, label, (name, value) => libc().fsetxattr(fd, name, value, value.length, 0));
}

function setAll(attrs: Map<string, Buffer>, path: string, set: (name: string, value: Buffer) => number): void {
  for (const [name, value] of attrs) {
    if (set(name, value) !== 0) {
      const e = koffi.errno();
      // Filesystems without xattrs, and privileged namespaces we may not write, are skipped.
      if (e === ENOTSUP || (e === EPERM && !name.startsWith('user.'))) continue;
      throw fail('lsetxattr', path, e, name);
    }
  }
}

function fail(op: string, path: string, errno: number, name?: string): ObdkitError {
  return new ObdkitError('EXATTR', `${op} failed with errno ${errno}`, { file: path, ...(name ? { field: name } : {}), errno });
}
