// The project-wide koffi binding: every failure is an ObdkitError coded by errno name and naming the
// call and path, xattrRefused tells "not representable here" apart from real failures, and the async
// forms report the errno of the call made on the worker thread.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ObdkitError } from '../../src/util/errors.js';
import {
  S_IFIFO,
  errnoName,
  fsetxattr,
  ioctlAsync,
  lgetxattr,
  llistxattr,
  lsetxattr,
  lsetxattrIfAccepted,
  lutimesNs,
  makedev,
  mknod,
  mountAsync,
  splitDev,
  umount2Async,
  xattrRefused,
} from '../../src/util/syscalls.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'obdkit-syscalls-test-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function isSyscallError(code: string, call: string, file: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof ObdkitError, String(err));
    assert.equal(err.code, code);
    assert.equal(err.context.syscall, call);
    assert.equal(err.context.errno, code);
    assert.equal(err.context.file, file);
    assert.ok(err.message.includes(file) && err.message.includes(code), err.message);
    return true;
  };
}

test('errno names are the ones Node uses', () => {
  assert.equal(errnoName(2), 'ENOENT');
  assert.equal(errnoName(16), 'EBUSY');
  assert.equal(errnoName(25), 'ENOTTY');
});

test('mknod and utimensat: work, and fail with the errno name and path', () => {
  const fifo = join(dir, 'fifo');
  mknod(fifo, S_IFIFO, 0o640);
  assert.ok(lstatSync(fifo).isFIFO());
  lutimesNs(fifo, { sec: 1000, nsec: 5 }, { sec: 2000, nsec: 123456789 });
  const st = lstatSync(fifo, { bigint: true });
  assert.equal(st.mtimeNs, 2000_123456789n);
  const missing = join(dir, 'no/such/dir/node');
  assert.throws(() => mknod(missing, S_IFIFO, 0o600), isSyscallError('ENOENT', 'mknod', missing));
  assert.throws(() => lutimesNs(missing, { sec: 0, nsec: 0 }, { sec: 0, nsec: 0 }), isSyscallError('ENOENT', 'utimensat', missing));
  assert.throws(() => mknod(fifo, S_IFIFO, 0o600), isSyscallError('EEXIST', 'mknod', fifo));
});

test('dev_t encoding round-trips through splitDev', () => {
  assert.equal(makedev(1, 3), 0x103n);
  for (const [major, minor] of [[1, 3], [8, 17], [259, 70000], [4095, 1048575]] as const) {
    assert.deepEqual(splitDev(Number(makedev(major, minor))), { major, minor });
  }
});

test('xattrs: set, list, get; absent is null; refused namespaces are told apart from failures', () => {
  const f = join(dir, 'xf');
  writeFileSync(f, 'x');
  lsetxattr(f, 'user.one', Buffer.from('1'));
  const fd = openSync(f, 'r');
  try {
    fsetxattr(fd, 'user.two', Buffer.from('22'), f);
  } finally {
    closeSync(fd);
  }
  assert.deepEqual(llistxattr(f).sort(), ['user.one', 'user.two']);
  assert.deepEqual(lgetxattr(f, 'user.two'), Buffer.from('22'));
  assert.equal(lgetxattr(f, 'user.absent'), null);

  // user.* is not allowed on a symlink: refused, not a failure.
  const link = join(dir, 'xlink');
  symlinkSync('xf', link);
  let refused: unknown;
  try {
    lsetxattr(link, 'user.one', Buffer.from('1'));
  } catch (err) {
    refused = err;
  }
  assert.ok(refused instanceof ObdkitError && xattrRefused(refused), String(refused));
  assert.equal(lsetxattrIfAccepted(link, 'user.one', Buffer.from('1')), false);
  assert.equal(lsetxattrIfAccepted(f, 'user.three', Buffer.from('3')), true);

  const missing = join(dir, 'missing');
  let notFound: unknown;
  try {
    lsetxattrIfAccepted(missing, 'user.one', Buffer.from('1'));
  } catch (err) {
    notFound = err;
  }
  assert.ok(notFound instanceof ObdkitError && notFound.code === 'ENOENT' && !xattrRefused(notFound));
  assert.throws(() => llistxattr(missing), isSyscallError('ENOENT', 'llistxattr', missing));
});

test('async calls report the errno of the call made on the worker thread', { skip: process.getuid?.() !== 0 ? 'needs root' : false }, async () => {
  const missing = join(dir, 'no-such-mountpoint');
  await assert.rejects(mountAsync('none', missing, 'tmpfs', 0, null), isSyscallError('ENOENT', 'mount', missing));
  await assert.rejects(umount2Async(dir, 0), isSyscallError('EINVAL', 'umount2', dir));
  const f = join(dir, 'plain');
  writeFileSync(f, '');
  const fd = openSync(f, 'r');
  try {
    // LOOP_CTL_GET_FREE on a regular file.
    await assert.rejects(ioctlAsync(fd, 0x4c82, 0, f), isSyscallError('ENOTTY', 'ioctl 0x4c82', f));
  } finally {
    closeSync(fd);
  }
  // A working call through the same path: mount a tmpfs and take it down again.
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  await mountAsync('obdkit-test', mnt, 'tmpfs', 0, 'size=1m');
  try {
    writeFileSync(join(mnt, 'f'), 'in tmpfs');
  } finally {
    await umount2Async(mnt, 0);
  }
});
