// ADD: per source, a URL is downloaded (remote.ts) and placed as one file, a local tar archive is
// extracted (archive.ts), anything else is copied like COPY (copy-files.ts).
import { lstatSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, posix } from 'node:path';
import { ObdkitError } from '../../src/util/errors.js';
import { extractArchive } from './archive.js';
import { copyFiles, copyRegularFile, ensureDir, withLeaf, type CopyOptions, type PlaceContext } from './copy-files.js';
import { download } from './remote.js';
import { parseChmod } from './chmod-spec.js';
import { resolveInRoot } from './root-path.js';
import { resolveChown } from './user-db.js';

export interface AddOptions extends CopyOptions {
  /** Directory for downloads, outside the rootfs. */
  tmpDir: string;
  /** `--checksum` for a single URL source. */
  checksum?: string;
  signal?: AbortSignal;
}

export function isUrl(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

export async function addFiles(opts: AddOptions): Promise<void> {
  const urls = opts.sources.filter(isUrl);
  if (opts.checksum !== undefined && (urls.length !== 1 || opts.sources.length !== 1)) {
    throw new ObdkitError('ECOPY', '--checksum requires exactly one URL source', { dest: opts.dest });
  }
  const destInner = posix.normalize('/' + opts.dest);
  const manySources = opts.sources.length > 1;
  const destIsDir = opts.dest.endsWith('/') || isDirectory(resolveInRoot(opts.destRoot, destInner));
  if (manySources && !destIsDir) {
    throw new ObdkitError('ECOPY', 'when using ADD with more than one source file, the destination must be a directory and end with a /', {
      dest: opts.dest,
    });
  }
  for (const source of opts.sources) {
    if (isUrl(source)) {
      await addUrl(opts, source, destInner, destIsDir);
      continue;
    }
    const srcHost = resolveInRoot(opts.srcRoot, source);
    let isFile = false;
    try {
      isFile = lstatSync(srcHost).isFile();
    } catch {
      /* copyFiles reports the missing source */
    }
    if (isFile) {
      const extracted = await extractArchive({
        archive: srcHost,
        destRoot: opts.destRoot,
        dest: destInner,
        ...(opts.chown !== undefined ? { chown: opts.chown } : {}),
      });
      if (extracted) continue;
    }
    copyFiles({ ...opts, sources: [source], dest: manySources && !opts.dest.endsWith('/') ? opts.dest + '/' : opts.dest });
  }
}

async function addUrl(opts: AddOptions, url: string, destInner: string, destIsDir: boolean): Promise<void> {
  mkdirSync(opts.tmpDir, { recursive: true });
  const tmp = mkdtempSync(join(opts.tmpDir, 'add-'));
  try {
    const file = join(tmp, 'download');
    const d = await download(url, file, {
      ...(opts.checksum !== undefined ? { checksum: opts.checksum } : {}),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    let target = destInner;
    if (destIsDir) {
      if (d.filename === '') throw new ObdkitError('ECOPY', `cannot determine a file name for ${url}`, { ref: url });
      target = posix.join(destInner, d.filename);
    }
    const owner = opts.chown !== undefined ? resolveChown(opts.destRoot, opts.chown) : { uid: 0, gid: 0 };
    const ctx: PlaceContext = { destRoot: opts.destRoot, hardlinks: new Map(), preserveOwnership: false, owner };
    ensureDir(ctx, posix.dirname(target));
    const mtime = d.mtime ?? new Date();
    // Docker gives downloaded files mode 0600 unless --chmod says otherwise.
    const mode = opts.chmod !== undefined ? parseChmod(opts.chmod)(0o600, false) : 0o600;
    withLeaf(ctx, target, (leaf) => copyRegularFile(file, leaf.path, owner, mode, new Map(), mtime, mtime));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function isDirectory(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
