// applyLayer onto a real ext4 filesystem (a loop-mounted image file), the way the converter uses
// it: two layers, then a check of the result with e2fsck and by reading it back after a remount.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { applyLayer } from '../../worker/apply/apply-layer.js';
import { lgetxattr } from '../../worker/apply/syscalls.js';
import { buildTar } from './tar-fixture.js';

test('two layers onto a loop-mounted ext4: whiteouts, xattrs, devices survive a remount; fsck clean', async () => {
  const base = mkdtempSync(join(tmpdir(), 'obdkit-apply-ext4-'));
  const img = join(base, 'fs.img');
  const mnt = join(base, 'mnt');
  mkdirSync(mnt);
  let mounted = false;
  try {
    await execa('truncate', ['-s', '64M', img]);
    await execa('mkfs.ext4', ['-q', '-F', '-O', '^has_journal', img]);
    await execa('mount', ['-o', 'loop', img, mnt]);
    mounted = true;
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    await applyLayer(
      Readable.from([
        buildTar([
          { name: 'etc/', type: '5' },
          { name: 'etc/a', data: 'a' },
          { name: 'etc/b', data: 'b' },
          { name: 'opt/', type: '5' },
          { name: 'opt/old/', type: '5' },
          { name: 'opt/old/x', data: Buffer.alloc(200_000, 7) },
          { name: 'bin/', type: '5' },
          { name: 'bin/ping', mode: 0o4755, data: 'ELF', pax: { 'SCHILY.xattr.security.capability': cap } },
          { name: 'dev/', type: '5' },
          { name: 'dev/null', type: '3', devmajor: 1, devminor: 3, mode: 0o666 },
        ]),
      ]),
      mnt,
    );
    const r = await applyLayer(
      Readable.from([
        buildTar([
          { name: 'etc/', type: '5' },
          { name: 'etc/.wh.a', data: '' },
          { name: 'etc/b', data: 'b2' },
          { name: 'opt/', type: '5' },
          { name: 'opt/.wh..wh..opq', data: '' },
          { name: 'opt/new', data: 'new' },
        ]),
      ]),
      mnt,
    );
    assert.equal(r.whiteouts, 2);
    await execa('umount', [mnt]);
    mounted = false;
    await execa('e2fsck', ['-fn', img]);
    await execa('mount', ['-o', 'loop,ro', img, mnt]);
    mounted = true;
    assert.deepEqual(readdirSync(join(mnt, 'etc')), ['b']);
    assert.equal(readFileSync(join(mnt, 'etc/b'), 'utf8'), 'b2');
    assert.deepEqual(readdirSync(join(mnt, 'opt')), ['new']);
    assert.deepEqual(lgetxattr(join(mnt, 'bin/ping'), 'security.capability'), cap);
    assert.equal(lstatSync(join(mnt, 'bin/ping')).mode & 0o7777, 0o4755);
    assert.ok(lstatSync(join(mnt, 'dev/null')).isCharacterDevice());
    assert.ok(!existsSync(join(mnt, 'etc/.wh.a')));
  } finally {
    if (mounted) await execa('umount', [mnt], { reject: false });
    rmSync(base, { recursive: true, force: true });
  }
});
