// Allocated extents of a sparse file, via lseek(SEEK_DATA/SEEK_HOLE) (Node has no binding for those,
// so libc is called through koffi, loaded on first use). Used by rw-layer.ts to rebuild the mappings
// of a sparse writable layer, whose data file holds the virtual disk in place and has no index.
import koffi from 'koffi';
import { ObdkitError } from '../util/errors.js';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

type LseekFn = (fd: number, offset: number, whence: number) => number | bigint;
let lseek: LseekFn | undefined;

function libcLseek(): LseekFn {
  if (!lseek) {
    const libc = koffi.load('libc.so.6');
    lseek = libc.func('int64_t lseek(int fd, int64_t offset, int whence)') as LseekFn;
  }
  return lseek;
}

/** [begin, end) byte ranges holding data at or after `from`, in order. */
export function dataExtents(fd: number, from: number, name: string): Array<[number, number]> {
  const seek = libcLseek();
  const out: Array<[number, number]> = [];
  let pos = from;
  for (;;) {
    const begin = Number(seek(fd, pos, SEEK_DATA));
    if (begin < 0) {
      const errno = koffi.errno();
      if (errno === ENXIO) return out; // no data after pos
      throw new ObdkitError('EIO', `lseek(SEEK_DATA) failed with errno ${errno}`, { file: name, offset: pos });
    }
    const end = Number(seek(fd, begin, SEEK_HOLE));
    if (end < 0) throw new ObdkitError('EIO', `lseek(SEEK_HOLE) failed with errno ${koffi.errno()}`, { file: name, offset: begin });
    out.push([begin, end]);
    pos = end;
  }
}
