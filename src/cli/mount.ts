// `obdkit mount` and `obdkit umount`: mount a stack of overlaybd layers as ext4 (read-only, or
// writable with an RW pair in --writable DIR) through the embedded block device, kept alive by a
// background daemon (worker/mount/daemon.ts) that `umount` tears down. A layer argument is a local
// layer file or an image reference; an image's layers are read lazily from its registry
// (worker/device/image-lowers.ts, registry-fetcher.ts), and the daemon keeps its fetch counters in
// a small file under the run dir that both commands report from.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { parsePlatform } from '../oci/platform.js';
import { parseReference, RegistryClient, type ImageReference, type RegistryHostOptions } from '../registry/index.js';
import { ObdkitError } from '../util/errors.js';
import { resolveImageLowers } from '../../worker/device/image-lowers.js';
import type { LowerSpec } from '../../worker/device/lower-source.js';
import type { FetchCounters, RemoteFetchSettings } from '../../worker/device/registry-fetcher.js';
import { TcmuSnapshotter } from '../../worker/device/tcmu-snapshotter.js';
import { startDaemon, stopDaemon } from '../../worker/mount/launcher.js';
import { DEFAULT_RUN_DIR } from '../../worker/mount/state.js';

export type MountSource = { kind: 'layer'; spec: LowerSpec } | { kind: 'image'; ref: ImageReference; text: string };

/**
 * One LAYER_OR_IMAGE_REF argument. An existing file, a path (`/…`, `./…`, `../…`) or `file:PATH` is
 * a local layer file; `HOST[:PORT]/REPO[:TAG][@DIGEST]` is an image (the host part is required, so
 * a mistyped file name never turns into a Docker Hub pull).
 */
export function parseMountSource(arg: string): MountSource {
  if (arg.startsWith('file:')) return { kind: 'layer', spec: { kind: 'file', path: resolve(arg.slice(5)) } };
  if (existsSync(arg) || /^\.{0,2}\//.test(arg)) return { kind: 'layer', spec: { kind: 'file', path: resolve(arg) } };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    throw new ObdkitError(
      'EINVAL',
      `layer "${arg}": URLs are not accepted; give only local layer files (PATH or file:PATH) or image references (HOST[:PORT]/REPO[:TAG][@DIGEST])`,
    );
  }
  const slash = arg.indexOf('/');
  const first = slash > 0 ? arg.slice(0, slash) : '';
  if (first.includes('.') || first.includes(':') || first === 'localhost') {
    return { kind: 'image', ref: parseReference(arg), text: arg };
  }
  throw new ObdkitError('ENOENT', `"${arg}" is neither a layer file nor an image reference (HOST[:PORT]/REPO[:TAG][@DIGEST])`, { file: resolve(arg) });
}

/** Kept for callers that only take local layer files. */
export function parseLayerArg(arg: string): LowerSpec {
  const s = parseMountSource(arg);
  if (s.kind !== 'layer') throw new ObdkitError('EINVAL', `layer "${arg}": only local layer files are accepted here`);
  return s.spec;
}

/** Where the daemon serving `mountpoint` keeps its fetch counters. */
export function fetchStatsFile(runDir: string, mountpoint: string): string {
  return join(runDir, 'fetch-stats', `${createHash('sha256').update(resolve(mountpoint)).digest('hex').slice(0, 16)}.json`);
}

export function readFetchStats(file: string): FetchCounters | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as FetchCounters;
  } catch {
    return undefined;
  }
}

export function formatFetchStats(c: FetchCounters, when: string): string {
  const pct = c.imageBytes > 0 ? ((100 * c.networkBytes) / c.imageBytes).toFixed(2) : '0';
  return `${when}: fetched ${c.networkBytes} bytes in ${c.networkRequests} requests from the registry, of ${c.imageBytes} bytes of image blobs (${pct}%)\n`;
}

interface MountOpts {
  writable?: string;
  runDir: string;
  workers?: number;
  device: string;
  insecureRegistry: string[];
  platform?: string;
  cacheDir?: string;
  fetchTimeout?: number;
}

async function resolveSources(args: string[], opts: MountOpts): Promise<{ lowers: LowerSpec[]; images: number }> {
  const sources = args.map(parseMountSource);
  const images = sources.filter((s) => s.kind === 'image').length;
  if (images === 0) return { lowers: sources.flatMap((s) => (s.kind === 'layer' ? [s.spec] : [])), images };
  const hosts: Record<string, RegistryHostOptions> = {};
  for (const h of opts.insecureRegistry) hosts[h] = { insecure: true };
  const client = new RegistryClient({ hosts });
  const cacheDir = resolve(opts.cacheDir ?? join(opts.runDir, 'blob-cache'));
  const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
  try {
    const lowers: LowerSpec[] = [];
    for (const s of sources) {
      if (s.kind === 'layer') lowers.push(s.spec);
      else lowers.push(...(await resolveImageLowers(client, s.ref, { cacheDir, ...(platform ? { platform } : {}) })).lowers);
    }
    return { lowers, images };
  } finally {
    await client.close();
  }
}

export function registerMountCommands(program: Command): void {
  program
    .command('mount')
    .description('mount overlaybd layers or images (first is the bottom) as ext4; images are read lazily from their registry; writable with --writable')
    .argument('<args...>', 'LAYER_OR_IMAGE_REF... MOUNTPOINT')
    .option('--writable <dir>', 'directory holding the writable RW pair (created if missing, recovered if present)')
    .option('--run-dir <dir>', 'state directory of device daemons', DEFAULT_RUN_DIR)
    .option('--workers <n>', 'FUSE worker threads', (v) => Number.parseInt(v, 10))
    .option('--device <kind>', 'device export: fuse (served by a background obdkit daemon) or tcmu (overlaybd-tcmu)', 'fuse')
    .option('--insecure-registry <host>', 'talk plain http to this registry host[:port] (repeatable; loopback hosts are plain http already)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--platform <os/arch>', 'platform to pick from a multi-platform image')
    .option('--cache-dir <dir>', 'on-disk cache of registry blob chunks (default RUN_DIR/blob-cache)')
    .option('--fetch-timeout <ms>', 'deadline of one registry read before the reader gets an I/O error', (v) => Number.parseInt(v, 10))
    .action(async (args: string[], opts: MountOpts) => {
      const mountpoint = args[args.length - 1]!;
      const { lowers, images } = await resolveSources(args.slice(0, -1), opts);
      if (lowers.length === 0 && !opts.writable) {
        throw new ObdkitError('EINVAL', 'nothing to mount: give at least one LAYER or --writable DIR');
      }
      if (opts.device === 'tcmu') {
        // overlaybd-tcmu is the daemon; obdkit only configures the target and mounts.
        const snap = new TcmuSnapshotter({ stateDir: resolve(opts.runDir, 'tcmu') });
        const mp = resolve(mountpoint);
        const h = opts.writable ? await snap.prepare(resolve(opts.writable), lowers, { mountpoint: mp }) : await snap.view(lowers, { mountpoint: mp });
        process.stdout.write(`${h.mountpoint} ${h.device} tcmu\n`);
        return;
      }
      if (opts.device !== 'fuse') throw new ObdkitError('EINVAL', `--device must be fuse or tcmu, not ${opts.device}`);
      const runDir = resolve(opts.runDir);
      let remote: RemoteFetchSettings | undefined;
      if (images > 0) {
        remote = { statsFile: fetchStatsFile(runDir, mountpoint) };
        if (opts.fetchTimeout !== undefined) remote.fetchTimeoutMs = opts.fetchTimeout;
        rmSync(remote.statsFile!, { force: true });
      }
      const req = {
        mountpoint: resolve(mountpoint),
        lowers,
        ...(opts.writable ? { writableDir: resolve(opts.writable) } : {}),
        ...(opts.workers ? { workers: opts.workers } : {}),
        ...(remote ? { remote } : {}),
      };
      let d: Awaited<ReturnType<typeof startDaemon>>;
      try {
        d = await startDaemon(runDir, req);
      } catch (err) {
        if (remote?.statsFile) rmSync(remote.statsFile, { force: true });
        throw err;
      }
      process.stdout.write(`${d.mountpoint} ${d.device} pid ${d.pid}\n`);
      const stats = remote?.statsFile ? readFetchStats(remote.statsFile) : undefined;
      if (stats) process.stdout.write(formatFetchStats(stats, 'mounted'));
    });
  program
    .command('umount')
    .description('unmount an obdkit mount and stop its device daemon')
    .argument('<mountpoint>')
    .option('--run-dir <dir>', 'state directory of device daemons', DEFAULT_RUN_DIR)
    .action(async (mountpoint: string, opts: { runDir: string }) => {
      const tcmu = new TcmuSnapshotter({ stateDir: resolve(opts.runDir, 'tcmu') });
      const h = tcmu.findByMountpoint(resolve(mountpoint));
      // A writable device keeps its RW pair (commit detaches without deleting it).
      if (h?.upper) await tcmu.commit(h);
      else if (h) await tcmu.remove(h);
      else {
        const runDir = resolve(opts.runDir);
        await stopDaemon(runDir, mountpoint);
        // The daemon wrote its final counters while stopping.
        const file = fetchStatsFile(runDir, mountpoint);
        const stats = readFetchStats(file);
        if (stats) process.stdout.write(formatFetchStats(stats, 'unmounted'));
        rmSync(file, { force: true });
      }
    });
}
