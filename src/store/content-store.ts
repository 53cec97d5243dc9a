// The local content store under the build root (default /var/lib/obdkit):
//   blobs/sha256/<hex>        layer blobs by digest, only ever complete (written elsewhere, renamed in)
//   layers/<hex>.json         a LayerRecord per blob (uuid, parent, source of a converted layer, or the
//                             repository a lazily read blob comes from, when the blob is not here)
//   converted/<hex>.json      converted-image cache: sha256 of a source layer digest chain → LayerRecord
//   tmp/                      files being written; same filesystem as blobs/, so adoption is a rename
// The solver's cache index and the device/run directories live beside it (paths below). KeyLock
// serialises concurrent builds in one process that would make the same thing.
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { KeyLock } from './key-lock.js';
import { isLayerRecord, type LayerRecord } from './layer-record.js';

export const DEFAULT_ROOT = '/var/lib/obdkit';

function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new ObdkitError('EDIGEST', `not a sha256 digest: ${JSON.stringify(digest)}`, { ref: digest });
  return m[1]!;
}

export class ContentStore {
  readonly locks = new KeyLock();

  constructor(readonly root: string = DEFAULT_ROOT) {
    for (const d of ['blobs/sha256', 'layers', 'converted', 'tmp']) mkdirSync(join(root, d), { recursive: true });
  }

  /** Solver cache index root. */
  get stateDir(): string {
    return join(this.root, 'state');
  }
  /** Device state (FUSE mounts, loop devices) for crash cleanup. */
  get runDir(): string {
    return join(this.root, 'run');
  }
  /** Writable layers of running steps, bundles, cache mounts. */
  get workDir(): string {
    return join(this.root, 'work');
  }

  blobPath(digest: string): string {
    return join(this.root, 'blobs', 'sha256', hexOf(digest));
  }

  hasBlob(digest: string): boolean {
    return existsSync(this.blobPath(digest));
  }

  /** A fresh path in tmp/ (nothing created). */
  tmpPath(prefix: string): string {
    return join(this.root, 'tmp', `${prefix}-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** Moves a finished file (hashed by the caller) into blobs/; an existing blob of that digest wins. */
  async adoptBlob(file: string, digest: string, size: number): Promise<string> {
    const dest = this.blobPath(digest);
    const st = await stat(file);
    if (st.size !== size) {
      throw new ObdkitError('EBLOBSIZE', `blob is ${st.size} bytes, expected ${size}`, { file, ref: digest });
    }
    if (existsSync(dest)) {
      await rm(file, { force: true });
      return dest;
    }
    await rename(file, dest);
    return dest;
  }

  async putLayer(rec: LayerRecord): Promise<void> {
    await this.writeJson(join(this.root, 'layers', `${hexOf(rec.digest)}.json`), rec);
  }

  /** The record of a layer whose blob is here, or can be read from its origin repository. */
  async getLayer(digest: string): Promise<LayerRecord | undefined> {
    const v = await this.readJson(join(this.root, 'layers', `${hexOf(digest)}.json`));
    return isLayerRecord(v) && (this.hasBlob(v.digest) || v.origin !== undefined) ? v : undefined;
  }

  /** The converted layer for a chain of source layer digests (bottom first), if made before. */
  async getConverted(sourceChain: readonly string[]): Promise<LayerRecord | undefined> {
    const v = await this.readJson(this.convertedPath(sourceChain));
    return isLayerRecord(v) && this.hasBlob(v.digest) ? v : undefined;
  }

  async putConverted(sourceChain: readonly string[], rec: LayerRecord): Promise<void> {
    await this.writeJson(this.convertedPath(sourceChain), rec);
  }

  private convertedPath(chain: readonly string[]): string {
    const h = createHash('sha256').update(chain.join('\n')).digest('hex');
    return join(this.root, 'converted', `${h}.json`);
  }

  private async writeJson(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(value) + '\n');
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  private async readJson(file: string): Promise<unknown> {
    try {
      return JSON.parse(await readFile(file, 'utf8')) as unknown;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }
}
