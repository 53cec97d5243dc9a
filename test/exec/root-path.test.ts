import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDirInRoot } from '../../worker/exec/dirfd.js';
import { mkdirAllInRoot, resolveInRoot, resolveRelative } from '../../worker/exec/root-path.js';
import { parseGroup, parsePasswd, resolveChown, resolveUser } from '../../worker/exec/user-db.js';
import { makeBusyboxRootfs, tempDir } from './fixtures.js';

describe('root-path', () => {
  test('symlinks resolve as if the root were /', () => {
    const root = tempDir('rp');
    const outside = tempDir('rp-out');
    try {
      mkdirSync(join(root, 'real/dir'), { recursive: true });
      symlinkSync('/real', join(root, 'abs'));
      symlinkSync('../../../../../..' + outside, join(root, 'up'));
      symlinkSync(outside, join(root, 'hostabs'));
      symlinkSync('loop2', join(root, 'loop1'));
      symlinkSync('loop1', join(root, 'loop2'));
      assert.equal(resolveRelative(root, '/abs/dir'), 'real/dir');
      assert.equal(resolveRelative(root, '../../../real/./dir/..'), 'real');
      assert.equal(resolveInRoot(root, '/up/x'), join(root, outside, 'x'));
      assert.equal(resolveInRoot(root, '/hostabs'), join(root, outside));
      assert.equal(resolveRelative(root, '/abs', { noFollowFinal: true }), 'abs');
      assert.equal(resolveRelative(root, '/missing/../../x'), 'x');
      assert.throws(() => resolveRelative(root, '/loop1'), { code: 'ESYMLINKLOOP' });
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  test('mkdirAllInRoot never creates outside the root', () => {
    const root = tempDir('rp');
    const outside = tempDir('rp-out');
    try {
      symlinkSync(outside, join(root, 'esc'));
      const made = mkdirAllInRoot(root, '/esc/a/b', { uid: 1000, gid: 1000 });
      assert.equal(made, join(root, outside, 'a/b'));
      assert.equal(existsSync(join(outside, 'a')), false);
      writeFileSync(join(root, 'file'), 'x');
      assert.throws(() => mkdirAllInRoot(root, '/file/sub'), { code: 'ENOTDIR' });
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });
});

describe('dirfd', () => {
  test('openat2 RESOLVE_IN_ROOT keeps lookups inside the root', () => {
    const root = tempDir('rp');
    const outside = tempDir('rp-out');
    try {
      symlinkSync(outside, join(root, 'esc'));
      symlinkSync('../../../../..', join(root, 'up'));
      mkdirSync(join(root, 'real'));
      const h = openDirInRoot(root, '/up/real');
      assert.ok(h !== null, 'openat2 is available on this kernel');
      try {
        assert.equal(readlinkSync(h.path()), join(root, 'real'));
      } finally {
        h.close();
      }
      // The host directory exists, but inside the root that path does not.
      assert.throws(() => openDirInRoot(root, '/esc'), { code: 'ENOENT' });
      mkdirSync(join(root, outside), { recursive: true });
      const inner = openDirInRoot(root, '/esc');
      try {
        assert.equal(readlinkSync(inner!.path()), join(root, outside));
      } finally {
        inner?.close();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });
});

describe('user-db', () => {
  test('parses passwd and group', () => {
    assert.deepEqual(parsePasswd('a:x:1:2::/h:/bin/sh\n# c\nbad\n'), [{ name: 'a', uid: 1, gid: 2, home: '/h' }]);
    assert.deepEqual(parseGroup('g:x:5:a, b\n'), [{ name: 'g', gid: 5, members: ['a', 'b'] }]);
  });

  test('resolves names, numbers, groups and defaults', () => {
    const root = tempDir('users');
    try {
      makeBusyboxRootfs(root);
      assert.deepEqual(resolveUser(root, undefined), { uid: 0, gid: 0, additionalGids: [10], home: '/root' });
      assert.deepEqual(resolveUser(root, 'app'), { uid: 1000, gid: 1000, additionalGids: [50, 10], home: '/home/app' });
      assert.deepEqual(resolveUser(root, '1000:staff'), { uid: 1000, gid: 50, additionalGids: [], home: '/home/app' });
      assert.deepEqual(resolveUser(root, '4242'), { uid: 4242, gid: 0, additionalGids: [], home: '/' });
      assert.deepEqual(resolveUser(root, 'app:77'), { uid: 1000, gid: 77, additionalGids: [], home: '/home/app' });
      assert.throws(() => resolveUser(root, 'ghost'), { code: 'EUSER' });
      assert.throws(() => resolveUser(root, 'app:ghosts'), { code: 'EUSER' });
      assert.deepEqual(resolveChown(root, 'app'), { uid: 1000, gid: 1000 });
      assert.deepEqual(resolveChown(root, '33'), { uid: 33, gid: 33 });
      assert.deepEqual(resolveChown(root, 'app:staff'), { uid: 1000, gid: 50 });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('a symlinked /etc/passwd is read inside the rootfs, not on the host', () => {
    const root = tempDir('users');
    try {
      mkdirSync(join(root, 'etc'));
      mkdirSync(join(root, 'alt'));
      writeFileSync(join(root, 'alt/passwd'), 'inner:x:7:7::/:/bin/sh\n');
      // Absolute target: on the host this would be the host's /etc/passwd's sibling; in the root it is /alt.
      symlinkSync('/alt/passwd', join(root, 'etc/passwd'));
      assert.equal(resolveUser(root, 'inner').uid, 7);
      rmSync(join(root, 'etc/passwd'));
      symlinkSync('/etc/missing/../../../../../../usr/share/base-passwd/passwd.master', join(root, 'etc/passwd'));
      // Resolves to the rootfs's own (missing) file, never the host's, which lists daemon.
      assert.throws(() => resolveUser(root, 'daemon'), { code: 'EUSER' });
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
