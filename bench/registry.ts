// Registry throughput benchmark: push and pull of one large blob (1 GiB by default, OBDKIT_BENCH_MIB
// to change) through obdkit and through `skopeo copy`, against the same local registry in the same
// run, then random range reads through RemoteBlob with a cold and a warm chunk cache.
// Run: node dist/bench/registry.js   (needs docker-registry and skopeo on PATH)
import { randomInt } from 'node:crypto';
import { link, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { MediaType } from '../src/oci/media-types.js';
import { overlaybdLayerDescriptor } from '../src/oci/overlaybd.js';
import { sha256Digest } from '../src/oci/digest.js';
import { RegistryClient } from '../src/registry/client.js';
import { parseReference } from '../src/registry/reference.js';
import { bufferSource, fileSource } from '../src/registry/upload.js';
import { pushImage } from '../src/registry/push.js';
import { downloadBlob, getManifest, getBlobBytes } from '../src/registry/pull.js';
import { RemoteBlob } from '../src/registry/remote-blob.js';
import { ChunkCache } from '../src/registry/chunk-cache.js';
import { startRegistry } from '../test/helpers/registry.js';
import { writeRandomFile } from '../test/registry/fixtures.js';

const MiB = 1 << 20;

function rate(bytes: number, ms: number): string {
  return `${((bytes / MiB) / (ms / 1000)).toFixed(0)} MiB/s`;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const r = await fn();
  return [r, performance.now() - t];
}

async function main(): Promise<void> {
  const sizeMiB = Number(process.env.OBDKIT_BENCH_MIB ?? 1024);
  const rounds = Number(process.env.OBDKIT_BENCH_ROUNDS ?? 3);
  const size = sizeMiB * MiB;
  const work = await mkdtemp(join(tmpdir(), 'obdkit-bench-'));
  const reg = await startRegistry();
  const client = new RegistryClient({ dockerConfig: false });
  try {
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const configDesc = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
    console.log(`blob: ${sizeMiB} MiB random (a new one each round, so no tool can skip or mount it), registry ${reg.host}, ${rounds} rounds`);
    const times = { obdPush: [] as number[], skoPush: [] as number[], obdPull: [] as number[], skoPull: [] as number[] };
    let layerDigest = '';
    let rangeRef = parseReference(`${reg.host}/bench/obdkit0:1`);
    for (let r = 0; r < rounds; r++) {
      const layerPath = join(work, `layer-${r}.bin`);
      layerDigest = await writeRandomFile(layerPath, size);
      const layer = overlaybdLayerDescriptor(layerDigest, size);
      const layerSource = await fileSource(layerPath);
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDesc, layers: [layer] }));
      const manifestDigest = sha256Digest(manifest);
      // An OCI layout of the same one-layer image for skopeo (the layer is hard-linked, not copied).
      const layout = join(work, `oci-${r}`);
      const blobs = join(layout, 'blobs', 'sha256');
      await mkdir(blobs, { recursive: true });
      await link(layerPath, join(blobs, layerDigest.slice(7)));
      await writeFile(join(blobs, configDesc.digest.slice(7)), config);
      await writeFile(join(blobs, manifestDigest.slice(7)), manifest);
      await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
      await writeFile(
        join(layout, 'index.json'),
        JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.ociManifest, digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'bench' } }] }),
      );
      const obdRef = parseReference(`${reg.host}/bench/obdkit${r}:1`);
      rangeRef = obdRef;
      const obdPush = async () => {
        const [, t] = await timed(() =>
          pushImage(client, obdRef, {
            manifest,
            mediaType: MediaType.ociManifest,
            blobs: [
              { descriptor: configDesc, source: bufferSource(config) },
              { descriptor: layer, source: layerSource },
            ],
          }),
        );
        times.obdPush.push(t);
      };
      const skoPush = async () => {
        const [, t] = await timed(() =>
          execa('skopeo', ['copy', '-q', '--preserve-digests', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${reg.host}/bench/skopeo${r}:1`]),
        );
        times.skoPush.push(t);
      };
      const obdPull = async () => {
        const out = join(work, `pull-obdkit-${r}.bin`);
        const [, t] = await timed(async () => {
          const m = await getManifest(client, obdRef);
          if (m.parsed.kind !== 'manifest') throw new Error('expected a manifest');
          await getBlobBytes(client, obdRef, m.parsed.manifest.config);
          await downloadBlob(client, obdRef, layerDigest, out, size);
        });
        times.obdPull.push(t);
        await rm(out, { force: true });
      };
      const skoPull = async () => {
        const dest = join(work, `pull-skopeo-${r}`);
        const [, t] = await timed(() =>
          execa('skopeo', ['copy', '-q', '--preserve-digests', '--src-tls-verify=false', '--dest-oci-accept-uncompressed-layers', `docker://${reg.host}/bench/skopeo${r}:1`, `oci:${dest}:bench`]),
        );
        times.skoPull.push(t);
        await rm(dest, { recursive: true, force: true });
      };
      // Alternate who goes first, so page-cache warmth and load spikes do not favour one tool.
      if (r % 2 === 0) {
        await obdPush();
        await skoPush();
        await obdPull();
        await skoPull();
      } else {
        await skoPush();
        await obdPush();
        await skoPull();
        await obdPull();
      }
      console.log(
        `round ${r}: push obdkit ${times.obdPush[r]!.toFixed(0)} ms, skopeo ${times.skoPush[r]!.toFixed(0)} ms; pull obdkit ${times.obdPull[r]!.toFixed(0)} ms, skopeo ${times.skoPull[r]!.toFixed(0)} ms`,
      );
      await rm(layout, { recursive: true, force: true });
      if (r < rounds - 1) await rm(layerPath, { force: true });
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const p = { obdPush: med(times.obdPush), skoPush: med(times.skoPush), obdPull: med(times.obdPull), skoPull: med(times.skoPull) };
    console.log('');
    console.log('median of rounds:');
    console.log(`push  obdkit ${p.obdPush.toFixed(0)} ms (${rate(size, p.obdPush)})  skopeo ${p.skoPush.toFixed(0)} ms (${rate(size, p.skoPush)})  ratio skopeo/obdkit ${(p.skoPush / p.obdPush).toFixed(2)}`);
    console.log(`pull  obdkit ${p.obdPull.toFixed(0)} ms (${rate(size, p.obdPull)})  skopeo ${p.skoPull.toFixed(0)} ms (${rate(size, p.skoPull)})  ratio skopeo/obdkit ${(p.skoPull / p.obdPull).toFixed(2)}`);

    // Range reads: 64 KiB at random offsets, cold (every read may miss) then warm (the same offsets again).
    const ref = rangeRef;
    const reads = Array.from({ length: 400 }, () => randomInt(0, size - 65536));
    const cache = await ChunkCache.open({ dir: join(work, 'cache'), capacityBytes: 2 * size });
    const rb = new RemoteBlob(client, ref, layerDigest, { cache, size });
    const [, tCold] = await timed(async () => {
      for (const off of reads) await rb.read(off, 65536);
    });
    const cold = { ...rb.stats };
    const [, tWarm] = await timed(async () => {
      for (const off of reads) await rb.read(off, 65536);
    });
    const direct = new RemoteBlob(client, ref, layerDigest, { size });
    const [, tDirect] = await timed(async () => {
      for (const off of reads) await direct.read(off, 65536);
    });
    const perRead = (ms: number) => `${((ms * 1000) / reads.length).toFixed(0)} µs/read`;
    console.log('');
    console.log(`range reads (${reads.length} × 64 KiB, sequential):`);
    console.log(`  cold cache   ${tCold.toFixed(0)} ms  ${perRead(tCold)}  network ${(cold.networkBytes / MiB).toFixed(0)} MiB in ${cold.networkRequests} requests`);
    console.log(`  warm cache   ${tWarm.toFixed(0)} ms  ${perRead(tWarm)}  network ${((rb.stats.networkBytes - cold.networkBytes) / MiB).toFixed(0)} MiB, served ${(rb.stats.servedBytes / MiB).toFixed(0)} MiB total`);
    console.log(`  no cache     ${tDirect.toFixed(0)} ms  ${perRead(tDirect)}  network ${(direct.stats.networkBytes / MiB).toFixed(1)} MiB in ${direct.stats.networkRequests} requests`);
  } finally {
    await client.close();
    await reg.stop();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
