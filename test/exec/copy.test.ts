// COPY/ADD into a rootfs directory: metadata preservation, --chown/--chmod, symlink escapes on
// both sides, tar auto-extraction for every compression, URL downloads with --checksum.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { join } from 'node:path';
import tar from 'tar-stream';
import { copyFiles } from '../../worker/exec/copy-files.js';
import { copyFilesInWorker } from '../../worker/exec/copy-worker.js';
import { addFiles } from '../../worker/exec/add-files.js';
import { detectCompression } from '../../worker/exec/archive.js';
import { parseChmod } from '../../worker/exec/chmod-spec.js';
import { makeNode, splitDev } from '../../worker/exec/mknod.js';
import { mkdirInRoot, mkfileInRoot } from '../../worker/exec/file-actions.js';
import { readXattrs, writeXattrs } from '../../worker/exec/xattr.js';
import { makeBusyboxRootfs, tempDir } from './fixtures.js';

const T = new Date('2021-02-03T04:05:06Z');
const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function newRootfs(): string {
  const r = tmp('dest');
  // A user database is all COPY needs from the destination.
  mkdirSync(join(r, 'etc'));
  writeFileSync(join(r, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n');
  writeFileSync(join(r, 'etc/group'), 'root:x:0:\nstaff:x:50:app\napp:x:1000:\n');
  return r;
}

/** A build context with every kind of entry COPY must carry. */
function makeContext(): string {
  const c = tmp('ctx');
  mkdirSync(join(c, 'a/sub'), { recursive: true });
  writeFileSync(join(c, 'a/f'), 'file-f');
  chmodSync(join(c, 'a/f'), 0o640);
  writeFileSync(join(c, 'a/exec'), '#!/bin/sh\n');
  chmodSync(join(c, 'a/exec'), 0o4755);
  writeFileSync(join(c, 'a/h1'), 'hard');
  linkSync(join(c, 'a/h1'), join(c, 'a/h2'));
  symlinkSync('../../../../etc/shadow', join(c, 'a/rel-out'));
  symlinkSync('/etc/passwd', join(c, 'a/abs'));
  writeFileSync(join(c, 'a/sub/deep'), 'deep');
  chownSync(join(c, 'a/sub/deep'), 1234, 5678);
  writeXattrs(join(c, 'a/f'), new Map([['user.obdkit', Buffer.from('v1')]]));
  chmodSync(join(c, 'a/sub'), 0o750);
  for (const p of ['a/f', 'a/exec', 'a/h1', 'a/sub/deep', 'a/sub', 'a']) utimesSync(join(c, p), T, T);
  writeFileSync(join(c, 'top.txt'), 'top');
  return c;
}

describe('copyFiles', () => {
  test('a directory source copies its contents with modes, mtimes, symlinks, hardlinks and xattrs', () => {
    const ctx = makeContext();
    const root = newRootfs();
    copyFiles({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/dst/' });
    const d = join(root, 'dst');
    assert.deepEqual(readdirSync(d).sort(), ['abs', 'exec', 'f', 'h1', 'h2', 'rel-out', 'sub']);
    assert.equal(readFileSync(join(d, 'f'), 'utf8'), 'file-f');
    assert.equal(lstatSync(join(d, 'f')).mode & 0o7777, 0o640);
    assert.equal(lstatSync(join(d, 'exec')).mode & 0o7777, 0o4755);
    assert.equal(lstatSync(join(d, 'sub')).mode & 0o7777, 0o750);
    assert.equal(lstatSync(join(d, 'f')).mtime.getTime(), T.getTime());
    assert.equal(lstatSync(join(d, 'sub')).mtime.getTime(), T.getTime());
    assert.equal(readlinkSync(join(d, 'rel-out')), '../../../../etc/shadow');
    assert.equal(readlinkSync(join(d, 'abs')), '/etc/passwd');
    assert.equal(lstatSync(join(d, 'h1')).ino, lstatSync(join(d, 'h2')).ino);
    assert.deepEqual(readXattrs(join(d, 'f')).get('user.obdkit'), Buffer.from('v1'));
    // Context files belong to root unless --chown says otherwise.
    assert.equal(lstatSync(join(d, 'sub/deep')).uid, 0);
  });

  test('--from a stage keeps owners; --chown and --chmod override them', () => {
    const ctx = makeContext();
    const root = newRootfs();
    copyFiles({ srcRoot: ctx, sources: ['a/sub'], destRoot: root, dest: '/keep', preserveOwnership: true });
    const st = lstatSync(join(root, 'keep/deep'));
    assert.deepEqual([st.uid, st.gid], [1234, 5678]);
    copyFiles({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/own/', chown: 'app:staff', chmod: 0o700 });
    for (const p of ['own/f', 'own/sub', 'own/sub/deep', 'own/rel-out']) {
      const s = lstatSync(join(root, p));
      assert.deepEqual([s.uid, s.gid], [1000, 50], p);
      if (!s.isSymbolicLink()) assert.equal(s.mode & 0o7777, 0o700, p);
    }
    assert.equal(lstatSync(join(root, 'own')).uid, 1000, 'created destination directory gets the owner');
  });

  test('file sources: to a file path, into a directory, several need a trailing slash', () => {
    const ctx = makeContext();
    const root = newRootfs();
    copyFiles({ srcRoot: ctx, sources: ['top.txt'], destRoot: root, dest: '/opt/renamed' });
    assert.equal(readFileSync(join(root, 'opt/renamed'), 'utf8'), 'top');
    copyFiles({ srcRoot: ctx, sources: ['top.txt', 'a/f'], destRoot: root, dest: '/many/' });
    assert.deepEqual(readdirSync(join(root, 'many')).sort(), ['f', 'top.txt']);
    assert.throws(() => copyFiles({ srcRoot: ctx, sources: ['top.txt', 'a/f'], destRoot: root, dest: '/notdir' }), {
      code: 'ECOPY',
    });
    assert.throws(() => copyFiles({ srcRoot: ctx, sources: ['missing'], destRoot: root, dest: '/x' }), { code: 'ENOENT' });
  });

  test('a source path through a symlink out of the context never reads outside', () => {
    const ctx = makeContext();
    const outside = tmp('outside');
    writeFileSync(join(outside, 'secret'), 'host secret');
    symlinkSync(outside, join(ctx, 'abs-esc'));
    symlinkSync('../../../../../../../..' + outside, join(ctx, 'rel-esc'));
    const root = newRootfs();
    for (const src of ['abs-esc/secret', 'rel-esc/secret', 'abs-esc', 'rel-esc/']) {
      assert.throws(() => copyFiles({ srcRoot: ctx, sources: [src], destRoot: root, dest: '/x/' }), { code: 'ENOENT' }, src);
    }
    // A link inside the context that stays inside is followed for the source path itself.
    symlinkSync('a/f', join(ctx, 'inside-link'));
    copyFiles({ srcRoot: ctx, sources: ['inside-link'], destRoot: root, dest: '/y' });
    assert.equal(readFileSync(join(root, 'y'), 'utf8'), 'file-f');
  });

  test('destination symlinks are resolved inside the rootfs and never write outside', () => {
    const ctx = makeContext();
    const root = newRootfs();
    const outside = tmp('outside');
    writeFileSync(join(outside, 'conf'), 'host conf');
    symlinkSync(outside, join(root, 'target'));
    symlinkSync('/../../../../../..' + outside + '/conf', join(root, 'etc/conf'));
    copyFiles({ srcRoot: ctx, sources: ['top.txt'], destRoot: root, dest: '/target/' });
    copyFiles({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/target/tree' });
    copyFiles({ srcRoot: ctx, sources: ['top.txt'], destRoot: root, dest: '/etc/conf' });
    assert.deepEqual(readdirSync(outside), ['conf']);
    assert.equal(readFileSync(join(outside, 'conf'), 'utf8'), 'host conf');
    assert.equal(readFileSync(join(root, outside, 'top.txt'), 'utf8'), 'top');
    assert.ok(existsSync(join(root, outside, 'tree/sub/deep')));
    assert.equal(lstatSync(join(root, 'etc/conf')).isFile(), true);
  });

  test('symbolic --chmod, directory itself (dirContents false), and a source link copied as a link', () => {
    const ctx = makeContext();
    const root = newRootfs();
    copyFiles({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/sym/', chmod: 'go-rwx,u+X' });
    assert.equal(lstatSync(join(root, 'sym/f')).mode & 0o7777, 0o600);
    assert.equal(lstatSync(join(root, 'sym/exec')).mode & 0o7777, 0o4700);
    assert.equal(lstatSync(join(root, 'sym/sub')).mode & 0o7777, 0o700);
    assert.equal(parseChmod('a=rX')(0o644, true), 0o555);
    assert.equal(parseChmod('0755')(0o600, false), 0o755);
    assert.throws(() => parseChmod('u+q'), { code: 'ECHMOD' });
    copyFiles({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/whole/', dirContents: false });
    assert.ok(existsSync(join(root, 'whole/a/sub/deep')));
    symlinkSync('a/f', join(ctx, 'lnk'));
    copyFiles({ srcRoot: ctx, sources: ['lnk'], destRoot: root, dest: '/l/', followSymlinks: false });
    assert.equal(readlinkSync(join(root, 'l/lnk')), 'a/f');
  });

  test('merged-usr: copying lib/ onto a rootfs whose /lib links to usr/lib goes through the link', () => {
    const ctx = tmp('ctx');
    mkdirSync(join(ctx, 'tree/lib'), { recursive: true });
    writeFileSync(join(ctx, 'tree/lib/libx.so'), 'lib');
    const root = newRootfs();
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    symlinkSync('usr/lib', join(root, 'lib'));
    copyFiles({ srcRoot: ctx, sources: ['tree'], destRoot: root, dest: '/' });
    assert.equal(readlinkSync(join(root, 'lib')), 'usr/lib');
    assert.equal(readFileSync(join(root, 'usr/lib/libx.so'), 'utf8'), 'lib');
  });

  test('FIFOs and device nodes from a stage are recreated', () => {
    const ctx = tmp('ctx');
    mkdirSync(join(ctx, 'dev'));
    makeNode(join(ctx, 'dev/fifo'), 'fifo', 0o640);
    makeNode(join(ctx, 'dev/null'), 'char', 0o666, 1, 3);
    const root = newRootfs();
    copyFiles({ srcRoot: ctx, sources: ['dev'], destRoot: root, dest: '/dev/', preserveOwnership: true });
    assert.ok(lstatSync(join(root, 'dev/fifo')).isFIFO());
    assert.equal(lstatSync(join(root, 'dev/fifo')).mode & 0o7777, 0o640);
    const n = lstatSync(join(root, 'dev/null'));
    assert.ok(n.isCharacterDevice());
    assert.deepEqual(splitDev(n.rdev), { major: 1, minor: 3 });
  });

  test('runs on a worker thread and carries error codes back', async () => {
    const ctx = makeContext();
    const root = newRootfs();
    await copyFilesInWorker({ srcRoot: ctx, sources: ['a'], destRoot: root, dest: '/w/' });
    assert.equal(readFileSync(join(root, 'w/sub/deep'), 'utf8'), 'deep');
    await assert.rejects(copyFilesInWorker({ srcRoot: ctx, sources: ['nope'], destRoot: root, dest: '/w/' }), { code: 'ENOENT' });
  });
});

async function packTar(entries: Array<{ header: tar.Header | Partial<tar.Header> & { name: string }; body?: string }>): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    p.on('end', () => resolve());
    p.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const body = e.body ?? '';
      p.entry({ ...e.header, size: Buffer.byteLength(body) }, body, (err) => (err ? reject(err) : resolve()));
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

describe('ADD', () => {
  test('local tars are extracted for every compression; other files are copied', async () => {
    const ctx = tmp('ctx');
    const srcTree = tmp('tree');
    mkdirSync(join(srcTree, 'pkg/bin'), { recursive: true });
    writeFileSync(join(srcTree, 'pkg/bin/tool'), 'tool');
    chmodSync(join(srcTree, 'pkg/bin/tool'), 0o755);
    symlinkSync('bin/tool', join(srcTree, 'pkg/link'));
    linkSync(join(srcTree, 'pkg/bin/tool'), join(srcTree, 'pkg/hard'));
    utimesSync(join(srcTree, 'pkg/bin/tool'), T, T);
    execFileSync('tar', ['-C', srcTree, '--owner=1001', '--group=1002', '-cf', join(ctx, 'p.tar'), 'pkg']);
    execFileSync('sh', ['-c', `cd ${ctx} && gzip -k p.tar && bzip2 -k p.tar && xz -k p.tar && zstd -q -k p.tar`]);
    writeFileSync(join(ctx, 'notes.gz'), execFileSync('gzip', ['-c'], { input: 'just text' }));
    const expect = { none: 'p.tar', gzip: 'p.tar.gz', bzip2: 'p.tar.bz2', xz: 'p.tar.xz', zstd: 'p.tar.zst' } as const;
    for (const [kind, file] of Object.entries(expect)) {
      assert.equal(detectCompression(readFileSync(join(ctx, file)).subarray(0, 8)), kind);
      const root = newRootfs();
      await addFiles({ srcRoot: ctx, sources: [file], destRoot: root, dest: '/opt/', tmpDir: tmp('dl') });
      assert.equal(readFileSync(join(root, 'opt/pkg/bin/tool'), 'utf8'), 'tool', kind);
      const st = lstatSync(join(root, 'opt/pkg/bin/tool'));
      assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.mtime.getTime()], [0o755, 1001, 1002, T.getTime()], kind);
      assert.equal(readlinkSync(join(root, 'opt/pkg/link')), 'bin/tool');
      assert.equal(lstatSync(join(root, 'opt/pkg/hard')).ino, st.ino);
    }
    const root = newRootfs();
    await addFiles({ srcRoot: ctx, sources: ['notes.gz', 'p.tar'], destRoot: root, dest: '/d/', tmpDir: tmp('dl'), chown: 'app' });
    assert.deepEqual(readFileSync(join(root, 'd/notes.gz')), readFileSync(join(ctx, 'notes.gz')));
    assert.equal(lstatSync(join(root, 'd/pkg/bin/tool')).uid, 1000, '--chown applies to extracted entries');
  });

  test('a hostile tar cannot write outside the destination root', async () => {
    const ctx = tmp('ctx');
    const outside = tmp('outside');
    const body = await packTar([
      { header: { name: '../../../../../../../..' + outside + '/dotdot', type: 'file', mode: 0o644 }, body: 'x' },
      { header: { name: 'link', type: 'symlink', linkname: outside, mode: 0o777 } },
      { header: { name: 'link/through-symlink', type: 'file', mode: 0o644 }, body: 'y' },
    ]);
    writeFileSync(join(ctx, 'evil.tar'), body);
    const root = newRootfs();
    await addFiles({ srcRoot: ctx, sources: ['evil.tar'], destRoot: root, dest: '/x/', tmpDir: tmp('dl') });
    assert.deepEqual(readdirSync(outside), []);
    assert.equal(readFileSync(join(root, 'x', outside, 'dotdot'), 'utf8'), 'x');
    assert.equal(readFileSync(join(root, outside, 'through-symlink'), 'utf8'), 'y');
    // Hardlink names are relative to the archive root and clamp there: no link to a host file.
    writeFileSync(
      join(ctx, 'hl.tar'),
      await packTar([{ header: { name: 'hl', type: 'link', linkname: '../../../../../etc/passwd', mode: 0o644 } }]),
    );
    await assert.rejects(addFiles({ srcRoot: ctx, sources: ['hl.tar'], destRoot: root, dest: '/y/', tmpDir: tmp('dl') }), {
      code: 'EARCHIVE',
    });
    assert.equal(existsSync(join(root, 'y/hl')), false);
  });

  describe('URL', () => {
    let server: Server;
    let base: string;
    const payload = Buffer.from('remote payload\n');
    const sha = createHash('sha256').update(payload).digest('hex');
    before(async () => {
      server = createServer((req, res) => {
        if (req.url === '/redirect') {
          res.writeHead(302, { location: '/files/app.bin' });
          res.end();
        } else if (req.url?.startsWith('/files/')) {
          res.writeHead(200, { 'last-modified': T.toUTCString(), 'content-length': payload.length });
          res.end(payload);
        } else {
          res.writeHead(404);
          res.end();
        }
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => {
      server.close();
    });

    test('downloads into a directory with mode 0600 and Last-Modified, verifying --checksum', async () => {
      const root = newRootfs();
      await addFiles({ srcRoot: root, sources: [`${base}/files/app.bin`], destRoot: root, dest: '/dl/', tmpDir: tmp('dl'), checksum: `sha256:${sha}` });
      const st = lstatSync(join(root, 'dl/app.bin'));
      assert.equal(readFileSync(join(root, 'dl/app.bin'), 'utf8'), 'remote payload\n');
      assert.equal(st.mode & 0o7777, 0o600);
      assert.equal(st.mtime.getTime(), T.getTime());
      await addFiles({ srcRoot: root, sources: [`${base}/files/app.bin`], destRoot: root, dest: '/named', tmpDir: tmp('dl'), chmod: 0o755, chown: 'app' });
      const named = lstatSync(join(root, 'named'));
      assert.deepEqual([named.mode & 0o7777, named.uid], [0o755, 1000]);
      await addFiles({ srcRoot: root, sources: [`${base}/redirect`], destRoot: root, dest: '/r/', tmpDir: tmp('dl') });
      assert.ok(existsSync(join(root, 'r/redirect')));
    });

    test('a wrong checksum fails and leaves nothing behind', async () => {
      const root = newRootfs();
      const dl = tmp('dl');
      await assert.rejects(
        addFiles({ srcRoot: root, sources: [`${base}/files/app.bin`], destRoot: root, dest: '/dl/', tmpDir: dl, checksum: `sha256:${'0'.repeat(64)}` }),
        { code: 'ECHECKSUM' },
      );
      assert.equal(existsSync(join(root, 'dl/app.bin')), false);
      assert.deepEqual(readdirSync(dl), []);
      await assert.rejects(
        addFiles({ srcRoot: root, sources: [`${base}/missing`], destRoot: root, dest: '/dl/', tmpDir: dl }),
        { code: 'EFETCH' },
      );
      await assert.rejects(
        addFiles({ srcRoot: root, sources: [`${base}/files/a`], destRoot: root, dest: '/dl/', tmpDir: dl, checksum: 'md5:abc' }),
        { code: 'ECHECKSUM' },
      );
    });
  });
});

test('mkdir and mkfile actions place entries inside the rootfs with owner and mode', () => {
  const root = newRootfs();
  const outside = tmp('outside');
  symlinkSync(outside, join(root, 'esc'));
  mkdirInRoot({ root, path: '/esc/a/b', mode: 0o750, parents: true, chown: 'app' });
  assert.equal(lstatSync(join(root, outside, 'a/b')).mode & 0o7777, 0o750);
  assert.equal(lstatSync(join(root, outside, 'a/b')).uid, 1000);
  assert.throws(() => mkdirInRoot({ root, path: '/no/such/x', mode: 0o755, parents: false }), { code: 'ENOENT' });
  symlinkSync(join(outside, 'victim'), join(root, 'etc/motd'));
  mkfileInRoot({ root, path: '/etc/motd', mode: 0o644, data: 'hello' });
  assert.deepEqual(readdirSync(outside), []);
  assert.equal(readFileSync(join(root, 'etc/motd'), 'utf8'), 'hello');
  assert.equal(lstatSync(join(root, 'etc/motd')).mode & 0o7777, 0o644);
});

test('busybox fixture rootfs resolves for COPY --chown names', () => {
  const root = tmp('bb');
  makeBusyboxRootfs(root);
  const ctx = makeContext();
  copyFiles({ srcRoot: ctx, sources: ['top.txt'], destRoot: root, dest: '/home/app/', chown: 'app' });
  assert.equal(lstatSync(join(root, 'home/app/top.txt')).uid, 1000);
});
