// The solver's ContentHasher for local contexts: the digest of exactly what a COPY or bind mount
// selects (paths after wildcard expansion, with the context's excludes applied), over each entry's
// relative path, type, permission bits, symlink target and file bytes. Owners and times are left out
// (context files are copied as 0:0 and their mtimes churn with checkouts), so an untouched context
// gives the same cache keys build after build. An ADD of a URL without --checksum is keyed by the
// digest of what the URL serves at build time.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ContentHasher, ContentRequest } from '../../src/solver/cache-key.js';
import { ObdkitError } from '../../src/util/errors.js';
import { download } from '../exec/remote.js';
import { expandSource } from './glob.js';
import type { ContextProvider } from './providers.js';

export function localContentHasher(contexts: ContextProvider, tmpPath?: () => string): ContentHasher {
  return async (req: ContentRequest): Promise<string> => {
    const op = req.source.op;
    if (op.kind === 'http' && tmpPath) {
      // A URL without a pinned checksum is keyed by what it serves now.
      const file = tmpPath();
      try {
        return (await download(op.url, file)).digest;
      } finally {
        rmSync(file, { force: true });
      }
    }
    if (op.kind !== 'local') throw new ObdkitError('EHASH', `cannot hash content of a ${op.kind} source`, { step: req.source.name });
    const root = await contexts.dir(op.name, req.excludes ?? op.excludes);
    const h = createHash('sha256');
    for (const p of req.paths ?? ['/']) {
      h.update(`pattern ${p}\0`);
      for (const found of expandSource(root, p)) await hashEntry(h, root, found, req.followSymlinks ?? true);
    }
    return 'sha256:' + h.digest('hex');
  };
}

async function hashEntry(h: Hash, root: string, rel: string, followTop: boolean): Promise<void> {
  const host = join(root, rel);
  let st;
  try {
    st = followTop ? statSync(host) : lstatSync(host);
  } catch {
    h.update(`missing ${rel}\0`);
    return;
  }
  const perm = (st.mode & 0o7777).toString(8);
  if (st.isSymbolicLink()) {
    h.update(`symlink ${rel} ${perm} ${readlinkSync(host)}\0`);
  } else if (st.isDirectory()) {
    h.update(`dir ${rel} ${perm}\0`);
    for (const name of readdirSync(host).sort()) await hashEntry(h, root, rel === '/' ? `/${name}` : `${rel}/${name}`, false);
  } else if (st.isFile()) {
    h.update(`file ${rel} ${perm} ${st.size}\0`);
    for await (const chunk of createReadStream(host, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  } else {
    h.update(`special ${rel} ${perm} ${st.rdev}\0`);
  }
}
