// ADD of a local tar archive: detects the compression by its magic bytes (gzip, bzip2, xz, zstd or
// none), streams the decompressed tar through tar-stream and places every entry inside the
// destination root with copy-files.ts's helpers (names that climb with `..` are clamped, links are
// created, not followed). A file that turns out not to be a tar is reported back so ADD copies it
// as a plain file, as Docker does.
import {
  chmodSync,
  closeSync,
  constants,
  createReadStream,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  openSync,
  readSync,
  symlinkSync,
  unlinkSync,
  utimesSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { DecompressStream } from 'zstd-napi';
import { ObdkitError } from '../../src/util/errors.js';
import { resolveInRoot } from './root-path.js';
import { resolveChown } from './user-db.js';
import { applyDirMeta, ensureDir, prepareLeaf, withLeaf, type DirMeta, type Owner, type PlaceContext } from './copy-files.js';
import { makeNode } from './mknod.js';
import { writeXattrsFd } from './xattr.js';

export type Compression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

export function detectCompression(head: Buffer): Compression {
  if (head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return 'gzip';
  if (head.length >= 3 && head.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** A readable of the decompressed bytes, plus a function that reports a failed decompressor. */
function decompressed(path: string, c: Compression): { stream: Readable; done: () => Promise<void> } {
  const file = createReadStream(path);
  if (c === 'none') return { stream: file, done: async () => {} };
  if (c === 'gzip') return { stream: file.pipe(createGunzip()), done: async () => {} };
  if (c === 'zstd') return { stream: file.pipe(new DecompressStream()), done: async () => {} };
  file.destroy();
  const child = spawn(c === 'xz' ? 'xz' : 'bzip2', ['-dc', path], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? 1)));
  return {
    stream: child.stdout,
    done: async () => {
      const code = await exited;
      if (code !== 0) throw new ObdkitError('EARCHIVE', `${c} decompression failed: ${stderr.trim()}`, { file: path });
    },
  };
}

/** One entry as tar-stream's extract iterator yields it. */
type TarEntry = AsyncIterable<Buffer> & { header: Header; resume(): unknown };

export interface ExtractOptions {
  archive: string;
  destRoot: string;
  /** Directory inside destRoot that receives the archive's entries. */
  dest: string;
  chown?: string;
}

/**
 * Extracts `archive` into `dest`. Returns false, having written nothing, when the file is not a
 * tar (possibly compressed); throws for a tar that is damaged part way.
 */
export async function extractArchive(opts: ExtractOptions): Promise<boolean> {
  const compression = detectCompression(readHead(opts.archive, 6));
  const owner = opts.chown !== undefined ? resolveChown(opts.destRoot, opts.chown) : undefined;
  const ctx: PlaceContext = { destRoot: opts.destRoot, hardlinks: new Map(), preserveOwnership: true };
  if (owner !== undefined) ctx.owner = owner;
  const destInner = posix.normalize('/' + opts.dest);
  const src = decompressed(opts.archive, compression);
  const extract = tar.extract();
  const dirs: Array<{ inner: string; meta: DirMeta }> = [];
  let entries = 0;
  src.stream.on('error', (e) => extract.destroy(e));
  src.stream.pipe(extract);
  try {
    for await (const entry of extract) {
      if (entries === 0) ensureDir(ctx, destInner);
      entries++;
      await placeEntry(ctx, destInner, entry as TarEntry, dirs);
    }
    await src.done();
  } catch (err) {
    src.stream.destroy();
    if (entries === 0) return false;
    throw new ObdkitError('EARCHIVE', `cannot extract archive: ${(err as Error).message}`, { file: opts.archive }, { cause: err });
  }
  if (entries === 0) return false;
  // Directory times last, deepest first, since creating entries inside them changes their mtime.
  for (const d of dirs.sort((a, b) => b.inner.length - a.inner.length)) applyDirMeta(ctx, d.inner, d.meta);
  return true;
}

async function placeEntry(
  ctx: PlaceContext,
  destInner: string,
  entry: TarEntry,
  dirs: Array<{ inner: string; meta: DirMeta }>,
): Promise<void> {
  const h = entry.header;
  const inner = posix.join(destInner, posix.normalize('/' + h.name));
  const o: Owner = ctx.owner ?? { uid: h.uid ?? 0, gid: h.gid ?? 0 };
  const mode = (h.mode ?? 0o644) & 0o7777;
  const mtime = h.mtime ?? new Date(0);
  const xattrs = new Map<string, Buffer>();
  for (const [k, v] of Object.entries((h.pax ?? {}) as Record<string, string>)) {
    if (k.startsWith('SCHILY.xattr.')) xattrs.set(k.slice('SCHILY.xattr.'.length), Buffer.from(v, 'latin1'));
  }
  switch (h.type) {
    case 'directory': {
      entry.resume();
      const host = resolveInRoot(ctx.destRoot, inner);
      if (!isDir(host)) withLeaf(ctx, inner, () => {});
      ensureDir(ctx, inner);
      const meta: DirMeta = { owner: o, mode, xattrs, atime: mtime, mtime };
      applyDirMeta(ctx, inner, meta);
      dirs.push({ inner, meta });
      return;
    }
    case 'file':
    case 'contiguous-file': {
      ensureDir(ctx, posix.dirname(inner));
      const leaf = prepareLeaf(ctx, inner);
      try {
        const fh = await open(leaf.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
        try {
          // Pulling chunk by chunk is the backpressure: the tar stream waits while we write.
          for await (const chunk of entry) await fh.write(chunk);
          await fh.chown(o.uid, o.gid);
          await fh.chmod(mode);
          writeXattrsFd(fh.fd, xattrs, inner);
          await fh.utimes(mtime, mtime);
        } finally {
          await fh.close();
        }
      } finally {
        leaf.release();
      }
      return;
    }
    case 'symlink': {
      entry.resume();
      ensureDir(ctx, posix.dirname(inner));
      withLeaf(ctx, inner, (leaf) => {
        symlinkSync(h.linkname ?? '', leaf.path);
        lchownSync(leaf.path, o.uid, o.gid);
        lutimesSync(leaf.path, mtime, mtime);
      });
      return;
    }
    case 'link': {
      entry.resume();
      ensureDir(ctx, posix.dirname(inner));
      const target = resolveInRoot(ctx.destRoot, posix.join(destInner, posix.normalize('/' + (h.linkname ?? ''))), {
        noFollowFinal: true,
      });
      const st = lstatSync(target);
      if (st.isDirectory()) throw new ObdkitError('EARCHIVE', `hardlink ${h.name} points to a directory`, { file: h.name });
      withLeaf(ctx, inner, (leaf) => {
        linkSync(target, leaf.path);
        // link(2) re-resolves the target path; make sure it still named the file we checked.
        if (lstatSync(leaf.path).ino !== st.ino) {
          unlinkSync(leaf.path);
          throw new ObdkitError('EPATHRACE', `hardlink target changed while extracting ${h.name}`, { file: h.name });
        }
      });
      return;
    }
    case 'character-device':
    case 'block-device':
    case 'fifo': {
      entry.resume();
      ensureDir(ctx, posix.dirname(inner));
      withLeaf(ctx, inner, (leaf) => {
        const kind = h.type === 'fifo' ? 'fifo' : h.type === 'character-device' ? 'char' : 'block';
        makeNode(leaf.path, kind, 0o600, h.devmajor ?? 0, h.devminor ?? 0);
        lchownSync(leaf.path, o.uid, o.gid);
        chmodSync(leaf.path, mode);
        utimesSync(leaf.path, mtime, mtime);
      });
      return;
    }
    default:
      entry.resume();
  }
}

function isDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
