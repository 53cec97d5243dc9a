// Lower layers on the device, against layers written by the reference overlaybd tools: the golden
// pattern layer in every wrapping reads back as pattern.raw; the golden ext4 stack mounts with the
// newest layer winning; writes over a stack, committed and stacked again, read back the same; a
// lower layer that fails under a live device surfaces as EIO.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, statSync, truncateSync } from 'node:fs';
import { open as openAsync } from 'node:fs/promises';
import { join } from 'node:path';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import type { RemoteFetcher } from '../../worker/device/remote-channel.js';
import { RwLayer } from '../../src/overlaybd/rw-layer.js';
import { commitLayerToFile } from '../../src/overlaybd/commit.js';
import { cleanAll, leftovers, oracleDir, sh, skipReason, tempDir, TEST_RUN_DIR } from './helpers.js';
import { obdCheck, runOracleTool } from '../helpers/oracle.js';

const samples = new URL('../../../testdata/overlaybd-samples/', import.meta.url).pathname;
const skip = skipReason();

/** Runs the reference overlaybd-commit -z -t. */
async function oracleCommit(data: string, index: string, out: string): Promise<void> {
  const r = await runOracleTool(oracleDir(), 'overlaybd-commit', ['-z', '-t', data, index, out]);
  assert.equal(r.exitCode, 0, r.output);
}

describe('lower layers', { skip }, () => {
  const snap = new FuseLoopSnapshotter({ runDir: TEST_RUN_DIR, workers: 3 });
  const t = tempDir('lowers');
  const ext4Base = join(t.path, 'ext4_64');
  before(async () => {
    await cleanAll();
    await sh(`tar -xzf ${samples}/ext4_64.tar.gz -C ${t.path}`);
  });
  after(async () => {
    await snap.close();
    await cleanAll();
    t.cleanup();
  });

  for (const name of ['pattern.commit', 'pattern.commit.lz4.zfile', 'pattern.commit.lz4.zfile.tar', 'pattern.commit.zstd-bs16.zfile', 'pattern.sealed']) {
    test(`golden ${name} as the only lower reads as pattern.raw followed by zeros`, async () => {
      const h = await snap.view([{ kind: 'file', path: join(samples, name) }], { filesystem: 'none' });
      try {
        assert.equal(await sh(`blockdev --getsize64 ${h.device}`), String(1024 ** 3));
        assert.equal(await sh(`dd if=${h.device} bs=1M count=1 iflag=direct status=none | cmp - ${samples}/pattern.raw && echo same`), 'same');
        const tail = await sh(`dd if=${h.device} bs=1M skip=1 count=7 iflag=direct status=none | tr -d '\\0' | wc -c`);
        assert.equal(tail.trim(), '0');
      } finally {
        await snap.remove(h);
      }
    });
  }

  test('golden ext4 stack (base + two layers) mounts read-only with the newest layer winning', async () => {
    const lowers = [ext4Base, join(samples, 'ext4-layer0.commit.lz4.zfile.tar'), join(samples, 'ext4-layer1.commit.lz4.zfile.tar')].map((path) => ({ kind: 'file' as const, path }));
    const h = await snap.view(lowers);
    try {
      const mp = h.mountpoint;
      assert.equal(await sh(`cat ${mp}/etc/hello.txt`), 'hello overwritten by B');
      assert.equal(await sh(`cat ${mp}/etc/b.txt`), 'layer B file');
      assert.equal(await sh(`test -e ${mp}/etc/gone.txt && echo present || echo absent`), 'absent');
      const blob = await sh(`tar -xOf ${samples}/ext4-layer0.input.tar ./usr/bin/blob | sha256sum`);
      assert.equal(await sh(`sha256sum < ${mp}/usr/bin/blob`), blob);
    } finally {
      await snap.remove(h);
    }
  });

  test('writes over a layer stack, committed with the commit library and stacked again, read back the same (obd-check: VALID)', async () => {
    const lowers = [ext4Base, join(samples, 'ext4-layer0.commit.lz4.zfile.tar')].map((path) => ({ kind: 'file' as const, path }));
    const w = join(t.path, 'w-commit');
    const h = await snap.prepare(w, lowers);
    const sums = (mp: string) => sh(`cd ${mp} && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 sha256sum`);
    let want: string;
    try {
      await sh(`
        mp=${h.mountpoint}
        echo "changed in the writable layer" > $mp/etc/hello.txt
        rm $mp/etc/gone.txt
        mkdir -p $mp/opt/app && head -c 3000000 /dev/urandom > $mp/opt/app/data && cp -a $mp/usr/bin/blob $mp/opt/app/blob2
        sync`);
      want = await sums(h.mountpoint);
    } finally {
      await snap.commit(h);
    }
    const committed = join(t.path, 'committed.lsmt');
    const rw = RwLayer.open(join(w, 'writable_data'), join(w, 'writable_index'), { readOnly: true });
    try {
      await commitLayerToFile(rw, committed, { uuid: '11111111-2222-3333-4444-555555555555' });
    } finally {
      rw.close();
    }
    const check = await obdCheck(oracleDir(), committed);
    assert.equal(check.result, 'VALID', check.output);
    const v = await snap.view([...lowers, { kind: 'file', path: committed }]);
    try {
      assert.equal(await sums(v.mountpoint), want);
      assert.equal(await sh(`cat ${v.mountpoint}/etc/hello.txt`), 'changed in the writable layer');
    } finally {
      await snap.remove(v);
    }
  });

  test('a fresh layer 0 (mkfs on the device) committed with overlaybd-commit mounts read-only with the same files', async () => {
    const w = join(t.path, 'w-layer0');
    const h = await snap.prepare(w, [], { virtualSize: 64 * 1024 ** 3 });
    let want: string;
    try {
      await sh(`cd ${h.mountpoint} && mkdir -p a/b && head -c 5000000 /dev/urandom > a/b/big && echo small > a/s && ln -s b/big a/l && sync`);
      want = await sh(`cd ${h.mountpoint} && sha256sum a/b/big a/s a/l && readlink a/l`);
    } finally {
      await snap.commit(h);
    }
    const committed = join(t.path, 'layer0.tar');
    await oracleCommit(join(w, 'writable_data'), join(w, 'writable_index'), committed);
    const v = await snap.view([{ kind: 'file', path: committed }]);
    try {
      assert.equal(await sh(`cd ${v.mountpoint} && sha256sum a/b/big a/s a/l && readlink a/l`), want);
    } finally {
      await snap.remove(v);
    }
  });

  test('remote lowers are read through the main thread (async fetcher) and match pattern.raw; failed fetches are EIO', async () => {
    const blob = join(samples, 'pattern.commit.lz4.zfile.tar');
    let failing = false;
    let fetches = 0;
    // Stands in for the registry client: asynchronous reads on the main thread, by digest.
    const remote: RemoteFetcher = {
      async fetch(spec, offset, length) {
        fetches++;
        if (failing) throw new Error('registry unreachable');
        assert.equal(spec.digest, 'sha256:pattern');
        const fh = await openAsync(blob, 'r');
        try {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await fh.read(buf, 0, length, offset);
          return buf.subarray(0, bytesRead);
        } finally {
          await fh.close();
        }
      },
    };
    const rsnap = new FuseLoopSnapshotter({ runDir: TEST_RUN_DIR, workers: 2, remote });
    const spec = { kind: 'remote' as const, digest: 'sha256:pattern', size: statSync(blob).size, dir: t.path, repoBlobUrl: 'http://registry.invalid/v2/x/blobs' };
    const h = await rsnap.view([spec], { filesystem: 'none' });
    try {
      assert.equal(await sh(`dd if=${h.device} bs=64k count=2 iflag=direct status=none | cmp - <(head -c 131072 ${samples}/pattern.raw) && echo same`), 'same');
      assert.ok(fetches > 0);
      failing = true;
      // Sectors not read before: the ZFile blocks behind them must be fetched, and that fails.
      const r = await sh(`dd if=${h.device} of=/dev/null bs=4k skip=64 count=1 iflag=direct 2>&1; echo rc=$?`, 30_000).catch((e: Error) => e.message);
      assert.match(r, /Input\/output error/);
      failing = false;
      assert.equal(await sh(`dd if=${h.device} bs=1M count=1 iflag=direct status=none | cmp - ${samples}/pattern.raw && echo same`), 'same');
    } finally {
      await rsnap.remove(h);
    }
  });

  test('a lower layer that fails under a live device surfaces as EIO, not a hang', async () => {
    const copy = join(t.path, 'broken.commit');
    copyFileSync(join(samples, 'pattern.commit'), copy);
    const h = await snap.view([{ kind: 'file', path: copy }], { filesystem: 'none' });
    try {
      truncateSync(copy, 8192); // index already loaded; every mapped extent now lies past the end
      const r = await sh(`dd if=${h.device} of=/dev/null bs=64k count=1 iflag=direct 2>&1; echo rc=$?`, 30_000).catch((e: Error) => e.message);
      assert.match(r, /Input\/output error/);
    } finally {
      await snap.remove(h);
    }
    assert.deepEqual(await leftovers(), []);
  });
});
