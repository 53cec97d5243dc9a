// Lazy mounting of overlaybd images straight from a registry, end to end with real parts: a real
// registry, layers made on a real FUSE+loop device (ext4 written by `cp`, committed and ZFile+tar
// wrapped), pushed as an overlaybd image, then `obdkit mount REF MNT` through the real CLI. Checks
// that only a small part of the image crosses the network, that a writable mount over the image
// commits like any other, and that a registry going away turns into EIO for the reader, not a hang.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { commitLayer } from '../../src/overlaybd/commit.js';
import { writeLayerBlob } from '../../src/overlaybd/layer-open.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { MediaType, overlaybdLayerDescriptor, sha256Digest, type Descriptor } from '../../src/oci/index.js';
import { bufferSource, fileSource, parseReference, pushImage, RegistryClient } from '../../src/registry/index.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import { resolveImageLowers } from '../../worker/device/image-lowers.js';
import type { LowerSpec } from '../../worker/device/lower-source.js';
import { RegistryFetcher } from '../../worker/device/registry-fetcher.js';
import type { PairPaths } from '../../worker/device/rw-pair.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { cleanupStale } from '../../worker/mount/teardown.js';
import { leftovers, sh, skipReason, tempDir } from './helpers.js';

const skip = skipReason();
// A run dir of its own: other device tests may be serving devices in the shared one meanwhile.
const RUN_DIR = join(tmpdir(), 'obdkit-lazy-test-run');
const BIN = new URL('../../../bin/obdkit.js', import.meta.url).pathname;
const SMALL_TEXT = 'hello from the bottom layer\n';
const NOTE_TEXT = 'note rewritten by the top layer\n';

async function obdkit(...args: string[]): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const r = await execa(process.execPath, [BIN, ...args], { reject: false, timeout: 180_000 });
  return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? -1 };
}

async function mustObdkit(...args: string[]): Promise<string> {
  const r = await obdkit(...args);
  assert.equal(r.exitCode, 0, `obdkit ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function fetchedOf(stdout: string, when: string): { fetched: number; total: number } {
  const m = new RegExp(`${when}: fetched (\\d+) bytes in \\d+ requests from the registry, of (\\d+) bytes`).exec(stdout);
  assert.ok(m, `no fetch counters after "${when}" in: ${stdout}`);
  return { fetched: Number(m[1]), total: Number(m[2]) };
}

/** For finally blocks: a failed test must not leave its daemon serving (cleanAll only removes dead ones). */
async function umountQuietly(mp: string): Promise<void> {
  if ((await sh(`grep -c " ${mp} " /proc/mounts || true`)) !== '0') await obdkit('umount', '--run-dir', RUN_DIR, mp);
}

async function nothingLeft(mp: string): Promise<void> {
  assert.deepEqual(await leftovers(RUN_DIR), []);
  assert.equal(await sh(`grep -c " ${mp} " /proc/mounts || true`), '0');
  assert.equal(await sh(`losetup -a | grep -c "${RUN_DIR}" || true`), '0');
}

/** Seals an RW pair the way the build does: commit, ZFile (lz4, 4 KiB), one-file tar. */
async function sealPair(pair: PairPaths, out: string): Promise<{ digest: string; size: number }> {
  const rw = RwLayer.open(pair.data, pair.index, { readOnly: true });
  try {
    return await writeLayerBlob(commitLayer(rw), out, { zfile: true, tar: true });
  } finally {
    rw.close();
  }
}

/** One writable step on the in-process device: runs `script` (with $MNT set) in a shell, then seals. */
async function layerStep(snap: FuseLoopSnapshotter, dir: string, lowers: LowerSpec[], script: string, out: string): Promise<{ digest: string; size: number }> {
  const h = await snap.prepare(join(dir, 'w'), lowers, lowers.length === 0 ? { virtualSize: 1024 ** 3 } : {});
  let pair: PairPaths;
  try {
    await sh(`MNT=${h.mountpoint}\n${script}\nsync -f "$MNT"`);
  } finally {
    pair = await snap.commit(h);
  }
  return sealPair(pair, out);
}

async function pushOverlaybdImage(client: RegistryClient, ref: string, blobs: { path: string; digest: string; size: number }[]): Promise<void> {
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: blobs.map((b) => b.digest) } }),
  );
  const configDesc: Descriptor = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: configDesc,
      layers: blobs.map((b) => overlaybdLayerDescriptor(b.digest, b.size, { fsType: 'ext4' })),
    }),
  );
  await pushImage(client, parseReference(ref), {
    manifest,
    mediaType: MediaType.ociManifest,
    blobs: [
      { descriptor: configDesc, source: bufferSource(config) },
      ...(await Promise.all(blobs.map(async (b) => ({ descriptor: { digest: b.digest, size: b.size }, source: await fileSource(b.path) })))),
    ],
  });
}

describe('lazy mount of an overlaybd image from a registry', { skip }, () => {
  let reg: RunningRegistry;
  let work: { path: string; cleanup(): void };
  let ref: string;
  const blobs: { path: string; digest: string; size: number }[] = [];

  before(async () => {
    await cleanupStale(RUN_DIR);
    work = tempDir('lazy');
    reg = await startRegistry();
    ref = `${reg.host}/lazy/app:v1`;
    const snap = new FuseLoopSnapshotter({ runDir: RUN_DIR, workers: 2 });
    try {
      const b0 = join(work.path, 'layer0.tar');
      const r0 = await layerStep(
        snap,
        join(work.path, 's0'),
        [],
        `mkdir -p "$MNT/data"
         for i in 1 2 3; do head -c 20000000 /dev/urandom > "$MNT/data/r$i"; done
         printf '%s' '${SMALL_TEXT}' > "$MNT/small.txt"
         echo 'note from the bottom layer' > "$MNT/note.txt"`,
        b0,
      );
      blobs.push({ path: b0, ...r0 });
      const b1 = join(work.path, 'layer1.tar');
      const r1 = await layerStep(
        snap,
        join(work.path, 's1'),
        [{ kind: 'file', path: b0 }],
        `head -c 3000000 /dev/urandom > "$MNT/data/top"
         printf '%s' '${NOTE_TEXT}' > "$MNT/note.txt"`,
        b1,
      );
      blobs.push({ path: b1, ...r1 });
    } finally {
      await snap.close();
    }
    const client = new RegistryClient();
    try {
      await pushOverlaybdImage(client, ref, blobs);
    } finally {
      await client.close();
    }
  });

  after(async () => {
    await cleanupStale(RUN_DIR);
    await reg?.stop();
    work?.cleanup();
  });

  test('resolveImageLowers lists the layers bottom first; a plain image is refused with a hint to build or convert it', async () => {
    const client = new RegistryClient();
    try {
      const img = await resolveImageLowers(client, parseReference(ref), { cacheDir: join(work.path, 'unused-cache') });
      assert.deepEqual(img.lowers.map((l) => l.digest), blobs.map((b) => b.digest));
      assert.equal(img.totalBytes, blobs[0]!.size + blobs[1]!.size);
      assert.equal(img.lowers[0]!.repoBlobUrl, `http://${reg.host}/v2/lazy/app/blobs`);
      // The same layer pushed without the overlaybd annotations is an ordinary image.
      const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [blobs[1]!.digest] } }));
      const configDesc = { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length };
      const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: configDesc, layers: [{ mediaType: MediaType.ociLayerTar, digest: blobs[1]!.digest, size: blobs[1]!.size }] }));
      await pushImage(client, parseReference(`${reg.host}/lazy/app:plain`), { manifest, mediaType: MediaType.ociManifest, blobs: [{ descriptor: configDesc, source: bufferSource(config) }] });
      await assert.rejects(resolveImageLowers(client, parseReference(`${reg.host}/lazy/app:plain`), { cacheDir: join(work.path, 'unused-cache') }), /not an overlaybd image.*obdkit build/);
      const mp = join(work.path, 'mnt-plain');
      const r = await obdkit('mount', '--run-dir', RUN_DIR, `${reg.host}/lazy/app:plain`, mp);
      assert.notEqual(r.exitCode, 0);
      assert.match(r.stderr, /not an overlaybd image/);
    } finally {
      await client.close();
    }
  });

  test('the fetcher fetches an identical in-flight range once and serves repeats from memory, then from its disk cache', async () => {
    const client = new RegistryClient();
    const cacheDir = join(work.path, 'fetcher-cache');
    const img = await resolveImageLowers(client, parseReference(ref), { cacheDir });
    const spec = img.lowers[0]!;
    const want = readFileSync(blobs[0]!.path);
    try {
      const f = new RegistryFetcher(img.lowers, { client });
      try {
        const [a, b] = await Promise.all([f.fetch(spec, 4096, 8192), f.fetch(spec, 4096, 8192)]);
        assert.ok(a.equals(b));
        assert.ok(a.equals(want.subarray(4096, 4096 + 8192)));
        let c = f.counters();
        assert.equal(c.requests, 2);
        assert.equal(c.sharedRequests, 1);
        assert.equal(c.networkRequests, 1);
        assert.equal(c.imageBytes, img.totalBytes);
        assert.ok((await f.fetch(spec, 0, 4096)).equals(want.subarray(0, 4096)));
        c = f.counters();
        assert.equal(c.networkRequests, 1, 'the first chunk is held by now');
        assert.equal(c.memoryHitBytes, 4096);
      } finally {
        await f.close();
      }
      // A new fetcher over the same cache dir (a remount) finds the chunk on disk.
      const g = new RegistryFetcher(img.lowers, { client });
      try {
        assert.ok((await g.fetch(spec, 100_000, 5000)).equals(want.subarray(100_000, 105_000)));
        assert.equal(g.counters().networkRequests, 0);
        assert.ok(g.counters().cacheHitBytes > 0);
      } finally {
        await g.close();
      }
    } finally {
      await client.close();
    }
  });

  test('obdkit mount REF MNT reads files while fetching a small part of the image; umount leaves nothing', async (t: TestContext) => {
    const mp = join(work.path, 'mnt-ro');
    const cache = join(work.path, 'cache-ro');
    try {
      const out = await mustObdkit('mount', '--run-dir', RUN_DIR, '--cache-dir', cache, ref, mp);
      const atMount = fetchedOf(out, 'mounted');
      assert.equal(await sh(`cat ${mp}/small.txt`), SMALL_TEXT.trimEnd());
      assert.equal(await sh(`cat ${mp}/note.txt`), NOTE_TEXT.trimEnd());
      assert.equal(await sh(`stat -c %s ${mp}/data/r2 ${mp}/data/top`), '20000000\n3000000');
      assert.match(await sh(`touch ${mp}/x 2>&1 || true`), /Read-only file system/);
      const gone = await mustObdkit('umount', '--run-dir', RUN_DIR, mp);
      const atUmount = fetchedOf(gone, 'unmounted');
      t.diagnostic(`image blobs ${atUmount.total} bytes; fetched ${atMount.fetched} bytes to mount, ${atUmount.fetched} bytes in all`);
      assert.equal(atUmount.total, blobs[0]!.size + blobs[1]!.size);
      assert.ok(atUmount.total > 60_000_000);
      assert.ok(atUmount.fetched > 0 && atUmount.fetched >= atMount.fetched);
      assert.ok(atUmount.fetched < atUmount.total / 20, `fetched ${atUmount.fetched} of ${atUmount.total} bytes`);
      await nothingLeft(mp);
    } finally {
      await umountQuietly(mp);
      await cleanupStale(RUN_DIR);
    }
  });

  test('a writable mount over the image ref commits with `obdkit layer commit` into a layer that stacks on the image', async () => {
    const mp = join(work.path, 'mnt-rw');
    const w = join(work.path, 'rw');
    const out = join(work.path, 'layer2.tar');
    try {
      await mustObdkit('mount', '--run-dir', RUN_DIR, '--cache-dir', join(work.path, 'cache-rw'), '--writable', w, ref, mp);
      await sh(`echo written-over-the-image > ${mp}/new.txt && cat ${mp}/small.txt > ${mp}/copy.txt && sync -f ${mp}`);
      await mustObdkit('umount', '--run-dir', RUN_DIR, mp);
      await nothingLeft(mp);
      // DATA INDEX spelled out: commander cannot parse the `DIR OUT` form of `<data> [index] <out>`.
      await mustObdkit('layer', 'commit', join(w, 'writable_data'), join(w, 'writable_index'), out, '--tar');
      assert.ok(existsSync(out));
      await mustObdkit('layer', 'verify', out);
      // The committed layer stacks on the image's own blobs, here as local files.
      await mustObdkit('mount', '--run-dir', RUN_DIR, blobs[0]!.path, blobs[1]!.path, out, mp);
      assert.equal(await sh(`cat ${mp}/new.txt ${mp}/copy.txt`), `written-over-the-image\n${SMALL_TEXT.trimEnd()}`);
      await mustObdkit('umount', '--run-dir', RUN_DIR, mp);
      await nothingLeft(mp);
    } finally {
      await umountQuietly(mp);
      await cleanupStale(RUN_DIR);
    }
  });

  // Last: it stops the registry.
  test('a registry that goes away mid-read gives the reader EIO, not a hang', async () => {
    const mp = join(work.path, 'mnt-gone');
    try {
      await mustObdkit('mount', '--run-dir', RUN_DIR, '--cache-dir', join(work.path, 'cache-gone'), '--fetch-timeout', '10000', ref, mp);
      assert.equal(await sh(`cat ${mp}/small.txt`), SMALL_TEXT.trimEnd());
      await reg.stop();
      // The guard only catches a hang; the fetch deadline (10 s, plus retries inside it) ends the read first.
      const r = await sh(`{ cat ${mp}/data/r3 > /dev/null; } 2>&1 || echo "rc=$?"`, 150_000);
      assert.match(r, /Input\/output error/);
      assert.match(r, /rc=1/);
      await mustObdkit('umount', '--run-dir', RUN_DIR, mp);
      await nothingLeft(mp);
    } finally {
      await umountQuietly(mp);
      await cleanupStale(RUN_DIR);
    }
  });
});
