// `obdkit mount` and `obdkit umount`: mount a stack of overlaybd layers as ext4 (read-only, or
// writable with an RW pair in --writable DIR) through the embedded block device, kept alive by a
// background daemon (worker/mount/daemon.ts) that `umount` tears down.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ObdkitError } from '../util/errors.js';
import type { LowerSpec } from '../../worker/device/lower-source.js';
import { TcmuSnapshotter } from '../../worker/device/tcmu-snapshotter.js';
import { startDaemon, stopDaemon } from '../../worker/mount/launcher.js';
import { DEFAULT_RUN_DIR } from '../../worker/mount/state.js';

/**
 * One LAYER argument. Today a local layer file (optionally spelled `file:PATH`); other schemes are
 * reserved for image references resolved through the registry.
 */
export function parseLayerArg(arg: string): LowerSpec {
  const m = /^([a-z][a-z0-9+.-]*):(.*)$/.exec(arg);
  if (m && m[1] !== 'file') {
    throw new ObdkitError('EINVAL', `layer "${arg}": only local layer files are supported (image references come later)`);
  }
  return { kind: 'file', path: resolve(m ? m[2]! : arg) };
}

export function registerMountCommands(program: Command): void {
  program
    .command('mount')
    .description('mount overlaybd layers (first is the bottom) as ext4; writable with --writable')
    .argument('<args...>', 'LAYER... MOUNTPOINT')
    .option('--writable <dir>', 'directory holding the writable RW pair (created if missing, recovered if present)')
    .option('--run-dir <dir>', 'state directory of device daemons', DEFAULT_RUN_DIR)
    .option('--workers <n>', 'FUSE worker threads', (v) => Number.parseInt(v, 10))
    .option('--device <kind>', 'device export: fuse (served by a background obdkit daemon) or tcmu (overlaybd-tcmu)', 'fuse')
    .action(async (args: string[], opts: { writable?: string; runDir: string; workers?: number; device: string }) => {
      const mountpoint = args[args.length - 1]!;
      const layers = args.slice(0, -1).map(parseLayerArg);
      if (layers.length === 0 && !opts.writable) {
        throw new ObdkitError('EINVAL', 'nothing to mount: give at least one LAYER or --writable DIR');
      }
      if (opts.device === 'tcmu') {
        // overlaybd-tcmu is the daemon; obdkit only configures the target and mounts.
        const snap = new TcmuSnapshotter({ stateDir: resolve(opts.runDir, 'tcmu') });
        const mp = resolve(mountpoint);
        const h = opts.writable ? await snap.prepare(resolve(opts.writable), layers, { mountpoint: mp }) : await snap.view(layers, { mountpoint: mp });
        process.stdout.write(`${h.mountpoint} ${h.device} tcmu\n`);
        return;
      }
      if (opts.device !== 'fuse') throw new ObdkitError('EINVAL', `--device must be fuse or tcmu, not ${opts.device}`);
      const req = { mountpoint: resolve(mountpoint), lowers: layers, ...(opts.writable ? { writableDir: resolve(opts.writable) } : {}), ...(opts.workers ? { workers: opts.workers } : {}) };
      const d = await startDaemon(resolve(opts.runDir), req);
      process.stdout.write(`${d.mountpoint} ${d.device} pid ${d.pid}\n`);
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
      else await stopDaemon(resolve(opts.runDir), mountpoint);
    });
}
