// The TCMU export's config.v1.json and configfs sequence. This machine has no configfs, so a
// temporary directory stands in for /sys/kernel/config and /sys; what the kernel would create by
// itself (the target's address, the SCSI disk) is created by the test beforehand.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TcmuSnapshotter, CMD_TIMEOUT } from '../../worker/device/tcmu-snapshotter.js';
import { buildOverlaybdConfig } from '../../worker/device/tcmu-config.js';
import { createSnapshotter } from '../../worker/device/snapshotter-factory.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';
import { tempDir } from './helpers.js';

test('config.v1.json lists lowers bottom first as files or registry blobs, with upper and result file', () => {
  const cfg = buildOverlaybdConfig(
    [
      { kind: 'file', path: '/layers/base.commit' },
      { kind: 'remote', digest: 'sha256:' + 'ab'.repeat(32), size: 642560, dir: '/snap/12/fs', repoBlobUrl: 'https://reg.example/v2/ns/app/blobs' },
    ],
    { data: '/w/writable_data', index: '/w/writable_index' },
    '/snap/13/init-debug.log',
  );
  assert.deepEqual(JSON.parse(JSON.stringify(cfg)), {
    repoBlobUrl: 'https://reg.example/v2/ns/app/blobs',
    lowers: [{ file: '/layers/base.commit' }, { digest: 'sha256:' + 'ab'.repeat(32), size: 642560, dir: '/snap/12/fs' }],
    upper: { data: '/w/writable_data', index: '/w/writable_index' },
    resultFile: '/snap/13/init-debug.log',
  });
  assert.equal(typeof cfg.lowers[1]!.size, 'number');
});

test('TCMU prepare/remove against a temporary directory standing in for configfs and sysfs', async () => {
  const t = tempDir('tcmu');
  try {
    const cfs = join(t.path, 'config');
    const sys = join(t.path, 'sys');
    const writes: Array<[string, string]> = [];
    const snap = new TcmuSnapshotter({
      stateDir: join(t.path, 'state'),
      configfsRoot: cfs,
      sysRoot: sys,
      mountFilesystem: false,
      onWrite: (p, v) => writes.push([p.slice(t.path.length), v]),
    });
    // What the kernel creates on its own for device id 1.
    const naa = 'naa.1990000000000001';
    assert.equal(snap.loopbackId('1'), naa);
    mkdirSync(join(cfs, 'target/loopback', naa, 'tpgt_1'), { recursive: true });
    writeFileSync(join(cfs, 'target/loopback', naa, 'tpgt_1/address'), '7:0:0\n');
    mkdirSync(join(sys, 'class/scsi_device/7:0:0:0/device/block/sdq'), { recursive: true });
    mkdirSync(join(sys, 'block/sdq/device'), { recursive: true });

    const h = await snap.prepare(join(t.path, 'w'), [{ kind: 'file', path: '/layers/l0.commit' }]);
    assert.equal(h.device, '/dev/sdq');
    const configPath = join(t.path, 'state/devices/1/config.v1.json');
    const target = '/config/target/core/user_999999999/dev_1';
    assert.deepEqual(writes, [
      [`${target}/control`, `dev_config=overlaybd/${configPath}`],
      [`${target}/control`, 'max_data_area_mb=4'],
      [`${target}/enable`, '1'],
      [`${target}/attrib/cmd_time_out`, String(CMD_TIMEOUT)],
      [`/config/target/loopback/${naa}/tpgt_1/nexus`, naa],
      ['/sys/block/sdq/device/timeout', '2147483'],
    ]);
    assert.equal(readlinkSync(join(cfs, 'target/loopback', naa, 'tpgt_1/lun/lun_0/dev_1')), join(cfs, target.slice('/config'.length)));
    const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
    assert.deepEqual(cfg, {
      repoBlobUrl: '',
      lowers: [{ file: '/layers/l0.commit' }],
      upper: { data: join(t.path, 'w/writable_data'), index: join(t.path, 'w/writable_index') },
      resultFile: join(t.path, 'state/devices/1/init-debug.log'),
    });
    // The new writable pair is an overlaybd RW pair with vsize 0 (inherits the lowers' size).
    const idx = readFileSync(join(t.path, 'w/writable_index'));
    assert.equal(idx.readUInt32LE(28), 1);
    assert.equal(idx.readBigUInt64LE(48), 0n);

    await snap.remove(h);
    assert.equal(existsSync(join(cfs, target.slice('/config'.length))), false);
    assert.equal(existsSync(join(cfs, 'target/loopback', naa)), false);
    assert.equal(existsSync(join(t.path, 'w/writable_data')), false);
  } finally {
    t.cleanup();
  }
});

test('the device export is chosen by configuration: fuse or tcmu behind one interface', () => {
  assert.ok(createSnapshotter({ device: 'fuse', runDir: '/nonexistent/run' }) instanceof FuseLoopSnapshotter);
  assert.ok(createSnapshotter({ device: 'tcmu', runDir: '/nonexistent/run', configfsRoot: '/nonexistent/cfs' }) instanceof TcmuSnapshotter);
  assert.throws(() => createSnapshotter({ device: 'nbd' as 'fuse', runDir: '/x' }), /fuse or tcmu/);
});
