// BuildKit's `type=tar` output proper: the final rootfs tree as one tar file (what
// `buildx build --output type=tar,dest=out.tar` produces), as opposed to the docker-archive image
// tar in archive-writers.ts. Entries are written in sorted order with their modes, owners, mtimes,
// symlink targets and hardlinks; file bodies are streamed. Symlinks are stored, never followed.
import { createReadStream, lstatSync, readdirSync, readlinkSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { writeTarFile, type TarFileWriter } from './tar-writer.js';
import { ObdkitError } from '../util/errors.js';
import { splitDev } from '../util/syscalls.js';

export async function writeRootfsTar(rootfs: string, dest: string): Promise<void> {
  await writeTarFile(dest, async (w) => {
    const links = new Map<string, string>();
    await walk(w, rootfs, '', links);
  });
}

async function walk(w: TarFileWriter, root: string, rel: string, links: Map<string, string>): Promise<void> {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel === '' ? name : `${rel}/${name}`;
    const host = join(root, r);
    const st = lstatSync(host);
    if (st.isDirectory()) {
      await w.addEntry({ ...meta(r + '/', st), type: 'directory' });
      await walk(w, root, r, links);
    } else if (st.isSymbolicLink()) {
      await w.addEntry({ ...meta(r, st), type: 'symlink', linkname: readlinkSync(host) });
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? links.get(key) : undefined;
      if (first !== undefined) {
        await w.addEntry({ ...meta(r, st), type: 'link', linkname: first });
        continue;
      }
      if (st.nlink > 1) links.set(key, r);
      await w.addStream({ ...meta(r, st), type: 'file', size: st.size }, createReadStream(host, { highWaterMark: 1 << 20 }));
    } else if (st.isFIFO()) {
      await w.addEntry({ ...meta(r, st), type: 'fifo' });
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      await w.addEntry({
        ...meta(r, st),
        type: st.isCharacterDevice() ? 'character-device' : 'block-device',
        devmajor: splitDev(st.rdev).major,
        devminor: splitDev(st.rdev).minor,
      });
    } else if (!st.isSocket()) {
      throw new ObdkitError('EEXPORT', 'unsupported file type in rootfs', { file: host });
    }
  }
}

function meta(name: string, st: Stats): { name: string; mode: number; uid: number; gid: number; mtime: Date; size: number } {
  return { name, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime, size: 0 };
}
