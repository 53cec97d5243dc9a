// What the executor needs from the client side of a build: the named local directories (the build
// context) and the secrets of RUN --mount=type=secret. The CLI serves both from the local machine
// (LocalDirContexts below, file-backed secrets); the gRPC server serves them through the session.
import { cpSync, lstatSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { PatternMatcher } from '../../src/util/path-patterns.js';
import { ObdkitError } from '../../src/util/errors.js';

export interface ContextProvider {
  /**
   * A local directory holding context `name` with `excludes` (dockerignore patterns) applied. The
   * directory stays valid until `close()` of the provider.
   */
  dir(name: string, excludes: readonly string[]): Promise<string>;
}

export interface SecretProvider {
  get(id: string): Promise<Buffer | undefined>;
}

/** Contexts from directories on this machine; excluded paths are left out of a private copy. */
export class LocalDirContexts implements ContextProvider {
  private readonly copies = new Map<string, string>();

  constructor(private readonly dirs: Record<string, string>, private readonly tmpRoot: string) {}

  async dir(name: string, excludes: readonly string[]): Promise<string> {
    const src = this.dirs[name];
    if (src === undefined) throw new ObdkitError('ECONTEXT', `no local context named ${JSON.stringify(name)}`, { ref: name });
    if (excludes.length === 0) return src;
    const key = `${name}\0${excludes.join('\0')}`;
    const have = this.copies.get(key);
    if (have) return have;
    const m = new PatternMatcher(excludes);
    const dest = mkdtempSync(join(this.tmpRoot, 'context-'));
    cpSync(src, dest, {
      recursive: true,
      preserveTimestamps: true,
      verbatimSymlinks: true,
      filter: (p) => {
        const rel = relative(src, p).split(sep).join('/');
        if (rel === '') return true;
        // With `!` re-includes a directory may hold kept files even when it matches itself.
        if (m.hasExclusions && isDir(p)) return true;
        return !m.matches(rel);
      },
    });
    this.copies.set(key, dest);
    return dest;
  }

  close(): void {
    for (const d of this.copies.values()) rmSync(d, { recursive: true, force: true });
    this.copies.clear();
  }
}

function isDir(p: string): boolean {
  try {
    return lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Secrets from files named on the command line (`--secret id=ID,src=FILE`). */
export class FileSecrets implements SecretProvider {
  constructor(private readonly files: Record<string, string>) {}
  async get(id: string): Promise<Buffer | undefined> {
    const f = this.files[id];
    return f === undefined ? undefined : readFileSync(f);
  }
}
