// Lazy mount benchmark: an overlaybd image (made here on the device: ext4 with a tree of random files,
// committed, ZFile+tar) pushed to a local registry, then mounted straight from the registry through
// the background daemon, per fetch chunk size: time and network bytes to mount, to read one small
// file cold, to read a 32 MB file cold, and the same read again after a remount over the warm cache.
// Compared with downloading every layer blob. Needs root, /dev/fuse, docker-registry.
// Usage: node dist/bench/lazy.js [--chunks 262144,1048576] [--mb 160]
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { commitLayer } from '../src/overlaybd/commit.js';
import { writeLayerBlob } from '../src/overlaybd/layer-open.js';
import { RwLayer } from '../src/overlaybd/rw-layer.js';
import { MediaType, overlaybdLayerDescriptor, sha256Digest } from '../src/oci/index.js';
import { bufferSource, downloadBlob, fileSource, parseReference, pushImage, RegistryClient } from '../src/registry/index.js';
import { FuseLoopSnapshotter } from '../worker/device/fuse-loop-snapshotter.js';
import { resolveImageLowers } from '../worker/device/image-lowers.js';
import type { FetchCounters } from '../worker/device/registry-fetcher.js';
import { startDaemon, stopDaemon } from '../worker/mount/launcher.js';
import { cleanupStale } from '../worker/mount/teardown.js';
import { startRegistry } from '../test/helpers/registry.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1]! : dflt;
}

async function sh(script: string): Promise<string> {
  return (await execa('bash', ['-euo', 'pipefail', '-c', script])).stdout;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [v, Number(process.hrtime.bigint() - t0) / 1e6];
}

function counters(file: string): FetchCounters {
  return JSON.parse(readFileSync(file, 'utf8')) as FetchCounters;
}

/** The daemon writes counters at most every 500 ms; wait for a quiet file. */
async function settledCounters(file: string): Promise<FetchCounters> {
  await new Promise((r) => setTimeout(r, 700));
  return counters(file);
}

const MB = 1e6;

async function main(): Promise<void> {
  const chunkSizes = arg('--chunks', '262144,1048576').split(',').map(Number);
  const totalMb = Number(arg('--mb', '160'));
  const work = mkdtempSync(join(tmpdir(), 'obdkit-bench-lazy-'));
  const runDir = join(work, 'run');
  const mp = join(work, 'mnt');
  const reg = await startRegistry();
  try {
    // One layer: a tree like an image's (many small files, a few big ones), all incompressible.
    const snap = new FuseLoopSnapshotter({ runDir, workers: 2 });
    const h = await snap.prepare(join(work, 'w0'), [], { virtualSize: 4 * 1024 ** 3 });
    const bigCount = Math.max(1, Math.floor((totalMb * 0.6) / 32));
    try {
      await sh(`cd ${h.mountpoint} && mkdir -p big small/a small/b
        for i in $(seq 1 ${bigCount}); do head -c 32000000 /dev/urandom > big/f$i; done
        head -c ${Math.round(totalMb * 0.4 * MB)} /dev/urandom | split -b 40000 -a 5 - small/a/x
        echo hello > small/b/hello.txt
        sync -f .`);
    } finally {
      const pair = await snap.commit(h);
      const rw = RwLayer.open(pair.data, pair.index, { readOnly: true });
      try {
        await writeLayerBlob(commitLayer(rw), join(work, 'layer0.tar'), { zfile: true, tar: true });
      } finally {
        rw.close();
        await snap.close();
      }
    }
    const blob = join(work, 'layer0.tar');
    const src = await fileSource(blob);
    const digest = `sha256:${(await sh(`sha256sum ${blob} | cut -d' ' -f1`)).trim()}`;
    const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [digest] } }));
    const configDesc = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDesc, layers: [overlaybdLayerDescriptor(digest, src.size)] }));
    const ref = parseReference(`${reg.host}/bench/lazy:v1`);
    const client = new RegistryClient();
    await pushImage(client, ref, {
      manifest,
      mediaType: MediaType.ociManifest,
      blobs: [
        { descriptor: configDesc, source: bufferSource(config) },
        { descriptor: { digest, size: src.size }, source: src },
      ],
    });
    const [, fullMs] = await timed(() => downloadBlob(client, ref, digest, join(work, 'full.tar'), src.size));
    rmSync(join(work, 'full.tar'));
    console.log(`image: 1 layer, ${(src.size / MB).toFixed(1)} MB blob; full download ${fullMs.toFixed(0)} ms`);
    console.log('chunk     | mount ms / MB fetched | small file ms / MB | 32 MB file cold ms / MB | warm remount: 32 MB file ms / MB');
    for (const [n, chunk] of chunkSizes.entries()) {
      const cacheDir = join(work, `cache-${n}`);
      mkdirSync(mp, { recursive: true });
      const statsFile = join(work, `stats-${n}.json`);
      const img = await resolveImageLowers(client, ref, { cacheDir });
      const row: string[] = [`${chunk / 1024} KiB`.padEnd(9)];
      const mount = () => startDaemon(runDir, { mountpoint: mp, lowers: img.lowers, remote: { statsFile, chunkBytes: chunk } });
      const [, mountMs] = await timed(mount);
      const c0 = counters(statsFile);
      row.push(`${mountMs.toFixed(0)} / ${(c0.networkBytes / MB).toFixed(2)}`);
      const [, smallMs] = await timed(() => sh(`cat ${mp}/small/b/hello.txt`));
      const c1 = await settledCounters(statsFile);
      row.push(`${smallMs.toFixed(0)} / ${((c1.networkBytes - c0.networkBytes) / MB).toFixed(2)}`);
      const [, bigMs] = await timed(() => sh(`cat ${mp}/big/f1 > /dev/null`));
      const c2 = await settledCounters(statsFile);
      row.push(`${bigMs.toFixed(0)} / ${((c2.networkBytes - c1.networkBytes) / MB).toFixed(2)} (${c2.requests - c1.requests} reads, ${c2.networkRequests - c1.networkRequests} GETs, ${c2.readAheadChunks - c1.readAheadChunks} read ahead)`);
      await stopDaemon(runDir, mp);
      await mount();
      await sh('sync; echo 3 > /proc/sys/vm/drop_caches');
      const [, warmMs] = await timed(() => sh(`cat ${mp}/big/f1 > /dev/null`));
      const c3 = await settledCounters(statsFile);
      row.push(`${warmMs.toFixed(0)} / ${(c3.networkBytes / MB).toFixed(2)} (incl. mount)`);
      await stopDaemon(runDir, mp);
      console.log(row.join(' | '));
    }
    await client.close();
  } catch (err) {
    // The daemon's own account of a failure is in its log, which goes away with the work dir.
    process.stderr.write(readFileSync(join(runDir, 'daemon.log'), 'utf8').split('\n').slice(-15).join('\n'));
    throw err;
  } finally {
    await stopDaemon(runDir, mp).catch(() => undefined);
    await cleanupStale(runDir).catch(() => undefined);
    await reg.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
