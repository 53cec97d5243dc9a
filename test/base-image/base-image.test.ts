// The base image: reproducible packing of a root filesystem (checked by applying the result with
// the layer applier), publishing it as a one-layer image to a real local registry, and — only with
// OBDKIT_SLOW_TESTS=1, since it downloads and installs Debian (a few minutes) — the real
// debootstrap run with its cache.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  chmodSync,
  chownSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { packRootfs } from '../../src/base-image/pack-rootfs.js';
import { makeDebianBase } from '../../src/base-image/debian-base.js';
import { mountsUnder } from '../../src/base-image/debootstrap.js';
import { pushBaseImage } from '../../src/base-image/push-base.js';
import { RegistryClient } from '../../src/registry/client.js';
import { getBlobBytes, getManifest } from '../../src/registry/pull.js';
import { parseReference } from '../../src/registry/reference.js';
import { applyLayer } from '../../worker/apply/apply-layer.js';
import { lgetxattr } from '../../worker/apply/syscalls.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';

const EPOCH = 1_700_000_000;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function makeTree(dir: string): void {
  mkdirSync(join(dir, 'usr/bin'), { recursive: true });
  mkdirSync(join(dir, 'etc'));
  writeFileSync(join(dir, 'usr/bin/ping'), 'ping');
  chmodSync(join(dir, 'usr/bin/ping'), 0o4755);
  writeFileSync(join(dir, 'usr/bin/capped'), 'cap');
  writeFileSync(join(dir, 'etc/new'), 'made after the epoch');
  writeFileSync(join(dir, 'etc/old'), 'older than the epoch');
  utimesSync(join(dir, 'etc/old'), 1_500_000_000, 1_500_000_000);
  chownSync(join(dir, 'etc/old'), 1234, 5678);
  linkSync(join(dir, 'usr/bin/ping'), join(dir, 'usr/bin/ping6'));
  symlinkSync('usr/bin', join(dir, 'bin'));
}

describe('packRootfs', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'obdkit-pack-'));
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  test('reproducible tar.gz: sorted, numeric owners, clamped mtimes, xattrs; applies back exactly', async () => {
    const a = join(work, 'a');
    const b = join(work, 'b');
    for (const d of [a, b]) {
      mkdirSync(d);
      makeTree(d);
      await execa('setcap', ['cap_net_raw+ep', join(d, 'usr/bin/capped')]);
    }
    const pa = await packRootfs(a, join(work, 'a.tar.gz'), { sourceDateEpoch: EPOCH });
    const pb = await packRootfs(b, join(work, 'b.tar.gz'), { sourceDateEpoch: EPOCH });
    assert.equal(pa.digest, pb.digest, 'same tree, same bytes');
    assert.equal(pa.diffId, pb.diffId);
    const gz = readFileSync(join(work, 'a.tar.gz'));
    assert.equal(pa.digest, sha256(gz));
    assert.equal(pa.size, gz.length);
    const tarBytes = gunzipSync(gz);
    assert.equal(pa.diffId, sha256(tarBytes));
    assert.equal(pa.tarBytes, tarBytes.length);
    const listing = (await execa('tar', ['-tvf', '-', '--numeric-owner'], { input: tarBytes })).stdout.split('\n');
    const names = listing.map((l) => l.split(/\s+/).slice(5).join(' '));
    assert.deepEqual(names.slice(0, 3), ['bin -> usr/bin', 'etc/', 'etc/new']);
    assert.ok(!names.some((n) => n.startsWith('./') || n.includes('PaxHeaders')));

    const out = join(work, 'applied');
    mkdirSync(out);
    const r = await applyLayer(createReadStream(join(work, 'a.tar.gz')), out);
    assert.equal(r.diffId, pa.diffId);
    assert.equal(statSync(join(out, 'etc/new')).mtimeMs, EPOCH * 1000);
    assert.equal(statSync(join(out, 'etc/old')).mtimeMs, 1_500_000_000_000);
    assert.equal(statSync(join(out, 'etc/old')).uid, 1234);
    assert.equal(statSync(join(out, 'etc/old')).gid, 5678);
    assert.equal(statSync(join(out, 'usr/bin/ping')).mode & 0o7777, 0o4755);
    assert.equal(statSync(join(out, 'usr/bin/ping6')).ino, statSync(join(out, 'usr/bin/ping')).ino);
    assert.equal(readlinkSync(join(out, 'bin')), 'usr/bin');
    assert.deepEqual(lgetxattr(join(out, 'usr/bin/capped'), 'security.capability'), lgetxattr(join(a, 'usr/bin/capped'), 'security.capability'));
    assert.ok(lgetxattr(join(out, 'usr/bin/capped'), 'security.capability'));
  });
});

describe('pushBaseImage', () => {
  let reg: RunningRegistry;
  let client: RegistryClient;
  let work: string;
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ dockerConfig: false });
    work = mkdtempSync(join(tmpdir(), 'obdkit-pushbase-'));
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('one-layer OCI image with linux config, PATH and Cmd bash; same layer, same digest', async () => {
    const tree = join(work, 'tree');
    mkdirSync(tree);
    makeTree(tree);
    const packed = await packRootfs(tree, join(work, 'base.tar.gz'), { sourceDateEpoch: EPOCH });
    const ref = `${reg.host}/obdkit/base:bookworm`;
    // From a bare path (digests computed from the file) ...
    const first = await pushBaseImage(join(work, 'base.tar.gz'), ref, { client });
    // ... and from a made layer with known digests: the same image.
    const second = await pushBaseImage({ tarPath: join(work, 'base.tar.gz'), ...packed }, ref, { client });
    assert.equal(first.digest, second.digest);
    assert.equal(first.layerDigest, packed.digest);

    const m = await getManifest(client, parseReference(ref));
    assert.equal(m.digest, first.digest);
    assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(m.parsed.kind, 'manifest');
    if (m.parsed.kind !== 'manifest') return;
    const [layer] = m.parsed.manifest.layers;
    assert.equal(m.parsed.manifest.layers.length, 1);
    assert.equal(layer!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    assert.equal(layer!.digest, packed.digest);
    assert.equal(layer!.size, packed.size);
    const config = JSON.parse((await getBlobBytes(client, parseReference(ref), m.parsed.manifest.config)).toString()) as {
      os: string;
      architecture: string;
      config: { Env: string[]; Cmd: string[] };
      rootfs: { type: string; diff_ids: string[] };
    };
    assert.equal(config.os, 'linux');
    assert.equal(config.architecture, 'amd64');
    assert.deepEqual(config.config.Cmd, ['bash']);
    assert.ok(config.config.Env.some((e) => e.startsWith('PATH=/usr/local/sbin:')));
    assert.deepEqual(config.rootfs, { type: 'layers', diff_ids: [packed.diffId] });
    const blob = await getBlobBytes(client, parseReference(ref), layer!, 1 << 24);
    assert.equal(sha256(blob), packed.digest);
  });
});

describe('makeDebianBase (debootstrap, needs the Debian mirror)', { skip: process.env.OBDKIT_SLOW_TESTS !== '1' && 'set OBDKIT_SLOW_TESTS=1 to run' }, () => {
  test('bookworm minbase: made once, cached, trimmed, and applies to a working tree', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'obdkit-base-cache-'));
    const out = mkdtempSync(join(tmpdir(), 'obdkit-base-root-'));
    try {
      const t0 = Date.now();
      const base = await makeDebianBase({ suite: 'bookworm', cacheDir });
      const seconds = (Date.now() - t0) / 1000;
      assert.equal(base.built, true);
      process.stderr.write(
        `debootstrap base: ${seconds.toFixed(0)} s, rootfs ${base.rootfsBytes} B, tar ${base.tarBytes} B, gzip ${base.size} B\n`,
      );
      assert.deepEqual(await mountsUnder(cacheDir), []);
      assert.deepEqual(readdirSync(cacheDir).filter((n) => n.startsWith('.work-')), []);
      const again = await makeDebianBase({ suite: 'bookworm', cacheDir });
      assert.equal(again.built, false);
      assert.equal(again.digest, base.digest);
      assert.equal(again.tarPath, base.tarPath);

      const r = await applyLayer(createReadStream(base.tarPath), out);
      assert.equal(r.diffId, base.diffId);
      assert.match(readFileSync(join(out, 'etc/debian_version'), 'utf8'), /^12\./);
      assert.equal(readlinkSync(join(out, 'bin')), 'usr/bin');
      assert.ok(lstatSync(join(out, 'usr/bin/bash')).isFile());
      assert.deepEqual(readdirSync(join(out, 'var/lib/apt/lists')), []);
      assert.deepEqual(readdirSync(join(out, 'dev')), []);
      assert.ok(!readdirSync(join(out, 'var/cache/apt/archives')).some((n) => n.endsWith('.deb')));
      assert.ok(!existsSync(join(out, 'debootstrap')));
      const { stdout } = await execa('chroot', [out, '/usr/bin/bash', '-c', 'echo $((6*7))']);
      assert.equal(stdout, '42');
    } finally {
      rmSync(out, { recursive: true, force: true });
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
