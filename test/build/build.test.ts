// `obdkit build` end to end, with real parts: a real registry, runc, FUSE + loop devices and ext4.
// A busybox-based one-layer OCI image is the base (converted to overlaybd on first use). The pushed
// image is checked by pulling its layers and mounting them read-only, every layer blob goes through
// the reference tools' `obd-check`, a second build must be answered from the cache, a failing RUN
// must report its command, exit code and output, and a secret must reach RUN but no layer blob.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readdirSync, rmSync, linkSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { FileRandomAccess } from '../../src/overlaybd/io.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { OverlaybdAnnotation } from '../../src/oci/overlaybd.js';
import { runBuild, parseOutputSpec, type BuildCliOptions } from '../../src/cli/build.js';
import { obdCheck, oracleDir, repoRoot } from '../helpers/oracle.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { pushBusyboxBase, tempDir, withPulledImage } from './fixtures.js';

const SECRET = 'obdkit-secret-9f1c2e';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['/dev/fuse', '/dev/loop-control', '/bin/busybox']) if (!existsSync(p)) return `needs ${p}`;
  return undefined;
}

const skip = missingPrerequisite();

describe('obdkit build', { skip }, () => {
  let reg: RunningRegistry;
  let work: ReturnType<typeof tempDir>;
  let base: string;
  let root: string;
  const lines: string[] = [];

  const build = (ctx: string, output: string | undefined, extra: Partial<BuildCliOptions> = {}) =>
    runBuild(ctx, { buildArg: [`BASE=${base}`], secret: [], cache: true, progress: 'plain', root, ...(output ? { output } : {}), ...extra }, (s) => {
      lines.push(s);
      if (process.env.OBDKIT_TEST_VERBOSE) process.stderr.write(s);
    });

  before(async () => {
    reg = await startRegistry();
    work = tempDir('obdkit-build-test-');
    root = join(work.path, 'root');
    base = await pushBusyboxBase(reg.host, work.path);
  });

  after(async () => {
    await reg?.stop();
    work?.remove();
  });

  /** The suite context: Dockerfile from testdata plus files whose modes and links git cannot hold. */
  function suiteContext(): string {
    const ctx = join(work.path, 'suite-ctx');
    if (existsSync(ctx)) return ctx;
    mkdirSync(join(ctx, 'files'), { recursive: true });
    copyFileSync(join(repoRoot, 'testdata/build/suite/Dockerfile'), join(ctx, 'Dockerfile'));
    writeFileSync(join(ctx, 'files/plain.txt'), 'plain file\n');
    chmodSync(join(ctx, 'files/plain.txt'), 0o600);
    writeFileSync(join(ctx, 'files/target.txt'), 'link target\n');
    symlinkSync('target.txt', join(ctx, 'files/link'));
    writeFileSync(join(ctx, 'files/hl1'), 'hard linked\n');
    linkSync(join(ctx, 'files/hl1'), join(ctx, 'files/hl2'));
    writeFileSync(join(ctx, 'owned.txt'), 'owned by app\n');
    writeFileSync(join(ctx, 'script.sh'), '#!/bin/sh\necho script\n');
    mkdirSync(join(ctx, 'tarsrc/inside'), { recursive: true });
    writeFileSync(join(ctx, 'tarsrc/inside/x.txt'), 'from the archive\n');
    return ctx;
  }

  test('builds, pushes and reads back a multi-stage image', async (t) => {
    const ctx = suiteContext();
    await execa('tar', ['-cf', join(ctx, 'archive.tar'), '-C', join(ctx, 'tarsrc'), 'inside']);
    const ref = `${reg.host}/test/suite:1`;
    const first = await build(ctx, `type=image,name=${ref},push=true`);
    assert.ok(first.digest);
    assert.ok(first.ran > 0);

    await withPulledImage(ref, join(work.path, 'pull1'), async (rootfs, manifest, blobs, configBytes) => {
      // Deleting a lower file really deletes it.
      assert.equal(existsSync(join(rootfs, 'etc/base-file')), false);
      assert.ok(existsSync(join(rootfs, 'bin/busybox')));
      // COPY keeps modes, symlinks and hardlinks.
      const plain = statSync(join(rootfs, 'srv/app/files/plain.txt'));
      assert.equal(plain.mode & 0o7777, 0o600);
      assert.equal(plain.uid, 0);
      assert.equal(readlinkSync(join(rootfs, 'srv/app/files/link')), 'target.txt');
      assert.equal(lstatSync(join(rootfs, 'srv/app/files/hl1')).ino, lstatSync(join(rootfs, 'srv/app/files/hl2')).ino);
      // --chown / --chmod.
      const owned = statSync(join(rootfs, 'srv/owned.txt'));
      assert.deepEqual([owned.uid, owned.gid, owned.mode & 0o777], [1000, 1000, 0o640]);
      assert.equal(statSync(join(rootfs, 'usr/bin/script.sh')).mode & 0o777, 0o755);
      // ADD extracts a local tar.
      assert.equal(readFileSync(join(rootfs, 'srv/extracted/inside/x.txt'), 'utf8'), 'from the archive\n');
      // COPY --from another stage, owner kept.
      assert.equal(readFileSync(join(rootfs, 'srv/artifact'), 'utf8'), 'built\n');
      assert.equal(statSync(join(rootfs, 'srv/artifact')).uid, 1000);
      // A cache mount seeded from that stage's /out (and nothing written to the cache reaches the image).
      assert.equal(readFileSync(join(rootfs, 'srv/from-cache.txt'), 'utf8'), 'built\n');
      assert.equal(existsSync(join(rootfs, 'mnt/seeded/added')), false);
      // ARG, ENV, WORKDIR, USER reach RUN.
      assert.equal(readFileSync(join(rootfs, 'srv/env.txt'), 'utf8'), 'hi /srv/app\n');
      assert.equal(readFileSync(join(rootfs, 'srv/pwd.txt'), 'utf8'), '/srv/app\n');
      assert.equal(readFileSync(join(rootfs, 'tmp/uid.txt'), 'utf8'), '1000\n');
      assert.equal(statSync(join(rootfs, 'home/app/by-app')).uid, 1000);

      // Manifest: every layer an annotated overlaybd blob; config agrees.
      assert.ok(manifest.layers.length >= 2);
      for (const l of manifest.layers) {
        assert.equal(l.annotations?.[OverlaybdAnnotation.blobDigest], l.digest);
        assert.equal(l.annotations?.[OverlaybdAnnotation.blobSize], String(l.size));
        assert.equal(l.annotations?.[OverlaybdAnnotation.version], '0.1.0');
      }
      const config = JSON.parse(configBytes.toString('utf8')) as {
        config: { Env: string[]; WorkingDir: string; User: string; Cmd: string[] };
        rootfs: { diff_ids: string[] };
        history: { empty_layer?: boolean }[];
      };
      assert.ok(config.config.Env.includes('APP_HOME=/srv/app'));
      assert.equal(config.config.WorkingDir, '/srv/app');
      assert.equal(config.config.User, 'app');
      assert.deepEqual(config.config.Cmd, ['/bin/sh']);
      assert.deepEqual(config.rootfs.diff_ids, manifest.layers.map((l) => l.digest));
      assert.equal(config.history.filter((h) => !h.empty_layer).length, manifest.layers.length);

      // The reference tools accept every layer.
      if (existsSync(join(oracleDir(), 'obd-check'))) {
        for (const b of blobs) {
          const v = await obdCheck(oracleDir(), b);
          assert.equal(v.result, 'VALID', `${b}: ${v.output}`);
        }
      } else {
        t.diagnostic(`obd-check not found in ${oracleDir()}: layer blobs not checked by the reference tools`);
      }
    });

    // The same build again: every step from the cache, the same image.
    const second = await build(ctx, `type=image,name=${ref},push=true`);
    assert.equal(second.ran, 0);
    assert.ok(second.cached > 0);
    assert.equal(second.digest, first.digest);
  });

  test('a failing RUN reports its command, exit code and output', async () => {
    lines.length = 0;
    const ctx = join(repoRoot, 'testdata/build/failing');
    await assert.rejects(build(ctx, undefined), (err: Error) => {
      assert.match(err.message, /Dockerfile:4/);
      assert.match(err.message, /exit 3/);
      assert.match(err.message, /exit code: 3/);
      assert.match(err.message, /about to fail/);
      return true;
    });
    const out = lines.join('');
    assert.match(out, /about to fail/);
    assert.match(out, /on stderr/);
    assert.match(out, /ERROR:/);
    // The failed step left nothing behind: no mounts, no loop devices, no writable layers.
    assert.equal(readFileSync('/proc/mounts', 'utf8').includes(root), false);
    assert.equal((await execa('losetup', ['-a'])).stdout.includes(root), false);
    assert.deepEqual(readdirSync(join(root, 'work')).filter((n) => n.startsWith('step-')), []);
  });

  test('secrets reach RUN but no layer blob', async () => {
    const ctx = join(repoRoot, 'testdata/build/secret');
    const secretFile = join(work.path, 'token.txt');
    writeFileSync(secretFile, SECRET);
    const ref = `${reg.host}/test/secret:1`;
    await build(ctx, `type=image,name=${ref},push=true`, { secret: [`id=token,src=${secretFile}`] });
    await withPulledImage(ref, join(work.path, 'pull2'), async (rootfs, _m, blobs) => {
      assert.equal(readFileSync(join(rootfs, 'secret-was-there'), 'utf8'), 'seen\n');
      assert.equal(readFileSync(join(rootfs, 'secret-env-was-there'), 'utf8'), 'seen\n');
      const needle = Buffer.from(SECRET);
      for (const b of blobs) {
        const raw = readFileSync(b);
        assert.equal(raw.includes(needle), false, `${b} holds the secret`);
        const f = new FileRandomAccess(b);
        try {
          const lsmt = unwrapLayerBlob(f).lsmt;
          const step = 4 << 20;
          for (let off = 0; off < lsmt.size; off += step) {
            // Overlap by the needle's length so a match across chunks is found too.
            const chunk = lsmt.pread(off, step + needle.length);
            assert.equal(chunk.includes(needle), false, `${b} holds the secret (decompressed, near byte ${off})`);
          }
        } finally {
          f.close();
        }
      }
    });
  });

  test('FROM scratch makes the filesystem in the first step; rootfs and OCI outputs', async () => {
    const ctx = join(repoRoot, 'testdata/build/scratch');
    const out = join(work.path, 'scratch-out');
    await build(ctx, `type=local,dest=${out}`);
    assert.equal(readFileSync(join(out, 'hello.txt'), 'utf8'), 'hello from scratch\n');
    assert.equal(readFileSync(join(out, 'dir/again.txt'), 'utf8'), 'hello from scratch\n');
    const oci = join(work.path, 'scratch.oci.tar');
    const r = await build(ctx, `type=oci,dest=${oci}`);
    assert.equal(r.ran, 0);
    const listing = (await execa('tar', ['-tf', oci])).stdout.split('\n');
    assert.ok(listing.includes('index.json'));
    assert.ok(listing.includes('oci-layout'));
    assert.ok(listing.some((l) => l.startsWith('blobs/sha256/')));
  });

  test('a cached step whose blob left the store runs again', async () => {
    const ctx = join(repoRoot, 'testdata/build/scratch');
    const out = join(work.path, 'scratch-again');
    const before = await build(ctx, `type=local,dest=${out}-0`);
    assert.equal(before.ran, 0);
    const blobs = join(root, 'blobs', 'sha256');
    for (const b of readdirSync(blobs)) rmSync(join(blobs, b));
    const again = await build(ctx, `type=local,dest=${out}`);
    assert.ok(again.ran >= 2);
    assert.equal(readFileSync(join(out, 'dir/again.txt'), 'utf8'), 'hello from scratch\n');
  });

  test('an overlaybd base is used as is, without conversion', async () => {
    const baseRef = `${reg.host}/test/suite:1`;
    lines.length = 0;
    const out = join(work.path, 'on-obd.tar');
    await runBuild(join(repoRoot, 'testdata/build/on-overlaybd'), { buildArg: [`BASE=${baseRef}`], secret: [], cache: true, progress: 'plain', root, output: `type=tar,dest=${out}` }, (s) => lines.push(s));
    const log = lines.join('');
    assert.doesNotMatch(log, /converting layer/);
    const listing = (await execa('tar', ['-tf', out])).stdout.split('\n');
    assert.ok(listing.includes('srv/copy.txt'));
    assert.ok(listing.includes('srv/owned.txt'));
    assert.ok(!listing.some((l) => l.startsWith('srv/app/files/')));
    assert.ok(!listing.includes('etc/base-file'));
  });

  test('ADD of a URL downloads the file; the cache follows the served content', async () => {
    let body = 'first version\n';
    const server = createServer((req, res) => {
      if (req.url !== '/served.txt') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/served.txt`;
      const ctx = join(repoRoot, 'testdata/build/add-url');
      const run = (dest: string) =>
        runBuild(ctx, { buildArg: [`BASE=${base}`, `URL=${url}`], secret: [], cache: true, progress: 'plain', root, output: `type=local,dest=${dest}` }, () => {});
      const out1 = join(work.path, 'url-1');
      const r1 = await run(out1);
      assert.ok(r1.ran > 0);
      assert.equal(readFileSync(join(out1, 'downloads/served.txt'), 'utf8'), 'first version\n');
      assert.equal(statSync(join(out1, 'downloads/served.txt')).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(out1, 'downloads/seen.txt'), 'utf8'), 'first version\n');
      const r2 = await run(join(work.path, 'url-2'));
      assert.equal(r2.ran, 0);
      body = 'second version\n';
      const out3 = join(work.path, 'url-3');
      const r3 = await run(out3);
      assert.ok(r3.ran > 0);
      assert.equal(readFileSync(join(out3, 'downloads/seen.txt'), 'utf8'), 'second version\n');
    } finally {
      server.close();
    }
  });

  test('output specs parse', () => {
    assert.deepEqual(parseOutputSpec('type=image,name=r:5000/a/b:1,push=true,registry.insecure=true'), {
      type: 'image',
      names: ['r:5000/a/b:1'],
      push: true,
      insecure: true,
      oci: true,
    });
    assert.deepEqual(parseOutputSpec('type=oci,dest=/tmp/x.tar'), { type: 'oci', dest: '/tmp/x.tar' });
    assert.deepEqual(parseOutputSpec('type=local,dest=out'), { type: 'local', dest: 'out' });
    assert.throws(() => parseOutputSpec('type=bogus'));
    assert.throws(() => parseOutputSpec('type=image'));
  });
});
