// A ContextProvider for contexts that must be fetched before they can be read: the server's, whose
// files live on the build client and arrive through the session's FileSync. Each named context is
// fetched once, on first use (a build that never reads its context never transfers it), with the
// `.dockerignore` excludes applied by the sender. Steps asking for further excludes (COPY --exclude)
// get a filtered private copy from LocalDirContexts (worker/build/providers.ts).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalDirContexts, type ContextProvider } from '../../worker/build/providers.js';
import { ObdkitError } from '../util/errors.js';

/** Fetches context `name` into the empty directory `dest`, leaving out `excludes`. */
export type ContextFetcher = (name: string, dest: string, excludes: readonly string[]) => Promise<void>;

export class FetchedContexts implements ContextProvider {
  private readonly fetched = new Map<string, Promise<string>>();
  private readonly copies: LocalDirContexts;
  private readonly dirs: Record<string, string> = {};

  /**
   * `workDir` holds the fetched trees (removed by `close()`); `transferExcludes` are the patterns the
   * fetcher applies (the `.dockerignore` ones).
   */
  constructor(
    private readonly workDir: string,
    private readonly fetch: ContextFetcher,
    private readonly transferExcludes: readonly string[] = [],
  ) {
    this.copies = new LocalDirContexts(this.dirs, workDir);
  }

  async dir(name: string, excludes: readonly string[]): Promise<string> {
    const root = await this.fetchOnce(name);
    if (sameList(excludes, this.transferExcludes) || excludes.length === 0) return root;
    return this.copies.dir(name, excludes);
  }

  private fetchOnce(name: string): Promise<string> {
    let p = this.fetched.get(name);
    if (!p) {
      p = (async () => {
        if (!/^[\w.:@-]+$/.test(name)) throw new ObdkitError('ECONTEXT', `invalid context name ${JSON.stringify(name)}`, { ref: name });
        const dest = join(this.workDir, `ctx-${name.replace(/[^\w.-]/g, '_')}`);
        await rm(dest, { recursive: true, force: true });
        await mkdir(dest, { recursive: true });
        await this.fetch(name, dest, this.transferExcludes);
        this.dirs[name] = dest;
        return dest;
      })();
      this.fetched.set(name, p);
      // A failed fetch may be retried by a later step rather than poisoning the build.
      p.catch(() => this.fetched.delete(name));
    }
    return p;
  }

  /** Removes filtered copies; the fetched trees go with `workDir`, which the caller owns. */
  close(): void {
    this.copies.close();
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
