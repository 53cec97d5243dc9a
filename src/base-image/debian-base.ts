// The embedded default base image: a minimal Debian made with debootstrap, trimmed and packed into
// one reproducible tar+gzip layer (pack-rootfs.ts). It is made once per suite + mirror + variant +
// architecture + epoch and kept in the cache directory; later calls (and concurrent ones in this
// process) get the cached layer. A finished entry is a directory renamed into place whole, so an
// interrupted run never leaves a half-written entry that a later call would trust (only a
// `.work-*` directory, removed when the run ends normally or with an error).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ObdkitError, errnoCode } from '../util/errors.js';
import { log } from '../util/log.js';
import { debianArch, removeTree, runDebootstrap, trimRootfs } from './debootstrap.js';
import { packRootfs } from './pack-rootfs.js';

/**
 * The Debian mirror this machine's apt already uses (deb822 `URIs:` or one-line `deb URL suite …`), so
 * the base image comes from the same place as the host's packages. Empty when none is configured:
 * debootstrap then uses its own default mirror.
 */
export function systemMirror(files = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']): string {
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    const deb822 = /^URIs:\s*(\S+)/m.exec(text);
    if (deb822) return deb822[1]!;
    const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/m.exec(text);
    if (oneLine) return oneLine[1]!;
  }
  return '';
}
/** 2024-01-01T00:00:00Z: the newest mtime any file of the base image may carry. */
export const DEFAULT_SOURCE_DATE_EPOCH = 1_704_067_200;
/** Bump when the recipe (trim list, tar options) changes, so old cache entries are not reused. */
const RECIPE_VERSION = 1;

export interface DebianBaseOptions {
  suite?: string;
  mirror?: string;
  cacheDir: string;
  variant?: string;
  /** Debian architecture; default: this machine's. */
  arch?: string;
  sourceDateEpoch?: number;
}

export interface DebianBase {
  /** The gzip-compressed layer. */
  tarPath: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** sha256 and size of the gzip file (the blob pushed to a registry). */
  digest: string;
  size: number;
  /** Sum of regular file sizes in the root filesystem. */
  rootfsBytes: number;
  tarBytes: number;
  suite: string;
  mirror: string;
  variant: string;
  arch: string;
  sourceDateEpoch: number;
  /** True when this call made it (false: taken from the cache). */
  built: boolean;
}

type Meta = Omit<DebianBase, 'tarPath' | 'built'>;

const LAYER_FILE = 'layer.tar.gz';
const META_FILE = 'meta.json';
const inFlight = new Map<string, Promise<DebianBase>>();

function cacheKey(m: Pick<Meta, 'suite' | 'mirror' | 'variant' | 'arch' | 'sourceDateEpoch'>): string {
  const h = createHash('sha256')
    .update(JSON.stringify([RECIPE_VERSION, m.suite, m.mirror, m.variant, m.arch, m.sourceDateEpoch]))
    .digest('hex');
  return `debian-${m.suite}-${m.arch}-${h.slice(0, 16)}`;
}

async function rootfsBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await lstat(join(e.parentPath, e.name))).size;
  }
  return total;
}

async function readCached(dir: string): Promise<DebianBase | undefined> {
  try {
    const meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as Meta;
    const tarPath = join(dir, LAYER_FILE);
    if ((await lstat(tarPath)).size !== meta.size) return undefined;
    return { ...meta, tarPath, built: false };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

async function build(o: Required<Omit<DebianBaseOptions, 'cacheDir'>> & { cacheDir: string }, finalDir: string): Promise<DebianBase> {
  await mkdir(o.cacheDir, { recursive: true });
  const work = await mkdtemp(join(o.cacheDir, '.work-'));
  const rootfs = join(work, 'rootfs');
  try {
    const t0 = Date.now();
    await runDebootstrap({ suite: o.suite, mirror: o.mirror, arch: o.arch, variant: o.variant, target: rootfs });
    await trimRootfs(rootfs);
    const bytes = await rootfsBytes(rootfs);
    const out = join(work, 'result');
    await mkdir(out);
    const packed = await packRootfs(rootfs, join(out, LAYER_FILE), { sourceDateEpoch: o.sourceDateEpoch });
    const meta: Meta = {
      diffId: packed.diffId,
      digest: packed.digest,
      size: packed.size,
      tarBytes: packed.tarBytes,
      rootfsBytes: bytes,
      suite: o.suite,
      mirror: o.mirror,
      variant: o.variant,
      arch: o.arch,
      sourceDateEpoch: o.sourceDateEpoch,
    };
    await writeFile(join(out, META_FILE), JSON.stringify(meta, null, 2) + '\n');
    try {
      await rename(out, finalDir);
    } catch (err) {
      // Another process finished first: use its result.
      const code = errnoCode(err);
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      const other = await readCached(finalDir);
      if (other) return other;
      throw err;
    }
    log.info(
      { suite: o.suite, seconds: Math.round((Date.now() - t0) / 1000), digest: packed.digest, size: packed.size, rootfsBytes: bytes },
      'base image made',
    );
    return { ...meta, tarPath: join(finalDir, LAYER_FILE), built: true };
  } finally {
    await removeTree(work);
  }
}

/** Returns the cached Debian base layer, making it first if needed (needs the Debian mirror). */
export async function makeDebianBase(opts: DebianBaseOptions): Promise<DebianBase> {
  const o = {
    suite: opts.suite ?? 'bookworm',
    mirror: (opts.mirror ?? systemMirror()).replace(/\/+$/, ''),
    variant: opts.variant ?? 'minbase',
    arch: opts.arch ?? debianArch(),
    sourceDateEpoch: opts.sourceDateEpoch ?? DEFAULT_SOURCE_DATE_EPOCH,
    cacheDir: opts.cacheDir,
  };
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(o.suite)) throw new ObdkitError('EBASE_SUITE', `invalid suite name ${JSON.stringify(o.suite)}`);
  const finalDir = join(o.cacheDir, cacheKey(o));
  const cached = await readCached(finalDir);
  if (cached) return cached;
  let p = inFlight.get(finalDir);
  if (p === undefined) {
    p = build(o, finalDir).finally(() => inFlight.delete(finalDir));
    inFlight.set(finalDir, p);
  }
  return p;
}
