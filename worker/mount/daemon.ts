// Entry point of the background device daemon started by `obdkit mount`: serves one device (FUSE
// workers in this process, loop, ext4 mount), reports readiness as one JSON line on stdout, and
// tears everything down in the strict order on SIGTERM/SIGINT/SIGHUP. Run as
//   node daemon.js RUN_DIR REQUEST_JSON
// Logs go to stderr, which the launcher points at a file.
import { readFileSync } from 'node:fs';
import { log } from '../../src/util/log.js';
import { FuseLoopSnapshotter } from '../device/fuse-loop-snapshotter.js';
import type { LowerSpec } from '../device/lower-source.js';
import { RegistryFetcher, type RemoteFetchSettings } from '../device/registry-fetcher.js';
import type { DeviceHandle } from '../device/snapshotter.js';
import { cleanupStale } from './teardown.js';

export interface DaemonRequest {
  mountpoint: string;
  lowers: LowerSpec[];
  writableDir?: string;
  workers?: number;
  /** Settings of the registry reads, for lowers of kind 'remote'. */
  remote?: RemoteFetchSettings;
}

export type DaemonReply = { ok: true; handle: DeviceHandle; pid: number } | { ok: false; error: string };

async function main(): Promise<void> {
  const [runDir, requestFile] = process.argv.slice(2);
  if (!runDir || !requestFile) throw new Error('usage: daemon.js RUN_DIR REQUEST_JSON');
  const req = JSON.parse(readFileSync(requestFile, 'utf8')) as DaemonRequest;
  await cleanupStale(runDir);
  const remote = req.lowers.some((l) => l.kind === 'remote') ? new RegistryFetcher(req.lowers, req.remote ?? {}) : undefined;
  const snap = new FuseLoopSnapshotter({ runDir, ...(req.workers !== undefined ? { workers: req.workers } : {}), ...(remote ? { remote } : {}) });
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ sig }, 'stopping device');
    snap
      .close()
      .then(() => remote?.close())
      .then(() => process.exit(0))
      .catch((err: unknown) => {
        log.error({ err: err instanceof Error ? err.message : String(err) }, 'teardown failed');
        process.exit(1);
      });
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => stop(sig));
  process.stdout.on('error', () => undefined); // the launcher may be gone
  try {
    const handle = req.writableDir
      ? await snap.prepare(req.writableDir, req.lowers, { mountpoint: req.mountpoint })
      : await snap.view(req.lowers, { mountpoint: req.mountpoint });
    remote?.flushStats();
    reply({ ok: true, handle, pid: process.pid });
    log.info({ device: handle.device, mountpoint: handle.mountpoint }, 'device ready');
  } catch (err) {
    reply({ ok: false, error: err instanceof Error ? err.message : String(err) });
    await remote?.close();
    process.exitCode = 1;
  }
}

function reply(r: DaemonReply): void {
  process.stdout.write(JSON.stringify(r) + '\n');
}

main().catch((err: unknown) => {
  reply({ ok: false, error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
