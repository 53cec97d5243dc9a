// applyLayer on real files in a temp directory (run as root): every entry type, metadata, whiteouts,
// opaque directories, hard links, type changes, compression detection, diffIDs, and paths that try
// to leave the root. Each test checks a sentinel directory beside the root is left untouched.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  createReadStream,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar, { type Header } from 'tar-stream';
import { Compressor } from 'zstd-napi';
import { applyLayer } from '../../worker/apply/apply-layer.js';
import { lgetxattr } from '../../worker/apply/syscalls.js';
import { buildTar } from './tar-fixture.js';

interface Sandbox {
  root: string;
  outside: string;
  snapshot: () => string;
  cleanup: () => void;
}

/** A root to apply into and a sentinel directory beside it that nothing may touch. */
function sandbox(): Sandbox {
  const base = mkdtempSync(join(tmpdir(), 'obdkit-apply-'));
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  mkdirSync(root);
  mkdirSync(join(outside, 'etc'), { recursive: true });
  writeFileSync(join(outside, 'etc', 'passwd'), 'sentinel\n');
  utimesSync(join(outside, 'etc', 'passwd'), 1000, 1000);
  const snapshot = (): string => {
    const lines: string[] = [];
    const walk = (dir: string): void => {
      for (const n of readdirSync(dir).sort()) {
        const p = join(dir, n);
        const st = lstatSync(p);
        lines.push(`${p} ${st.mode} ${st.size} ${st.mtimeMs} ${st.isFile() ? readFileSync(p, 'latin1') : ''}`);
        if (st.isDirectory()) walk(p);
      }
    };
    walk(outside);
    lines.push(readdirSync(base).sort().join(','));
    return lines.join('\n');
  };
  return { root, outside, snapshot, cleanup: () => rmSync(base, { recursive: true, force: true }) };
}

async function withSandbox(fn: (s: Sandbox) => Promise<void>): Promise<void> {
  const s = sandbox();
  const before = s.snapshot();
  try {
    await fn(s);
    assert.equal(s.snapshot(), before, 'something outside the root changed');
  } finally {
    s.cleanup();
  }
}

function apply(buf: Buffer, root: string) {
  return applyLayer(Readable.from([buf]), root, { name: 'test-layer' });
}

type PackEntry = { header: Partial<Header> & Pick<Header, 'name'>; data?: string };

async function packWithTarStream(entries: PackEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      if (e.data !== undefined) pack.entry(e.header, e.data, (err) => (err ? reject(err) : resolve()));
      else pack.entry(e.header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Repository root (this file runs from dist/test/apply/). */
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const T = new Date(1_600_000_000_000);
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('applyLayer', () => {
  test('every entry type with owners, modes, setuid and mtimes', async () => {
    await withSandbox(async ({ root }) => {
      const layer = await packWithTarStream([
        { header: { name: 'usr/', type: 'directory', mode: 0o755, mtime: T, pax: { mtime: '1600000000.123456789' } } },
        { header: { name: 'usr/bin/', type: 'directory', mode: 0o750, uid: 5, gid: 6, mtime: T } },
        { header: { name: 'usr/bin/su', mode: 0o4755, uid: 0, gid: 0, mtime: T }, data: '#!/bin/sh\n' },
        { header: { name: 'usr/bin/tool', mode: 0o2711, uid: 1000, gid: 1001, mtime: T, pax: { mtime: '1500000000.000000042' } }, data: 'tool' },
        {
          header: {
            name: 'usr/bin/tool-link',
            type: 'link',
            linkname: 'usr/bin/tool',
            mode: 0o2711,
            uid: 1000,
            gid: 1001,
            mtime: T,
            pax: { mtime: '1500000000.000000042' },
          },
        },
        { header: { name: 'usr/bin/sh', type: 'symlink', linkname: '/bin/dash', uid: 7, gid: 8, mtime: T } },
        { header: { name: 'dev/', type: 'directory', mode: 0o755, mtime: T } },
        { header: { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, mtime: T } },
        { header: { name: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660, gid: 6, mtime: T } },
        { header: { name: 'run/', type: 'directory', mode: 0o1777, mtime: T } },
        { header: { name: 'run/fifo', type: 'fifo', mode: 0o620, mtime: T } },
        { header: { name: 'empty', mode: 0o400, mtime: T }, data: '' },
      ]);
      const r = await apply(layer, root);
      assert.equal(r.entries, 12);
      assert.equal(r.whiteouts, 0);
      assert.equal(r.compression, 'none');
      assert.equal(r.diffId, sha256(layer));
      assert.equal(r.tarBytes, layer.length);
      assert.equal(r.bytes, '#!/bin/sh\n'.length + 4);

      const su = statSync(join(root, 'usr/bin/su'), { bigint: true });
      assert.equal(Number(su.mode & 0o7777n), 0o4755);
      const tool = statSync(join(root, 'usr/bin/tool'), { bigint: true });
      assert.equal(Number(tool.mode & 0o7777n), 0o2711);
      assert.equal(tool.uid, 1000n);
      assert.equal(tool.gid, 1001n);
      assert.equal(tool.mtimeNs, 1_500_000_000_000_000_042n);
      assert.equal(tool.nlink, 2n);
      assert.equal(statSync(join(root, 'usr/bin/tool-link')).ino, Number(tool.ino));
      assert.equal(readlinkSync(join(root, 'usr/bin/sh')), '/bin/dash');
      const sh = lstatSync(join(root, 'usr/bin/sh'));
      assert.equal(sh.uid, 7);
      assert.equal(sh.gid, 8);
      assert.equal(sh.mtimeMs, T.getTime());
      const nul = lstatSync(join(root, 'dev/null'));
      assert.ok(nul.isCharacterDevice());
      assert.equal(nul.rdev, (1 << 8) | 3);
      assert.equal(nul.mode & 0o7777, 0o666);
      const loop = lstatSync(join(root, 'dev/loop9'));
      assert.ok(loop.isBlockDevice());
      assert.equal(loop.rdev, (7 << 8) | 9);
      assert.equal(loop.gid, 6);
      assert.ok(lstatSync(join(root, 'run/fifo')).isFIFO());
      assert.equal(lstatSync(join(root, 'run')).mode & 0o7777, 0o1777);
      // Directory metadata survives the children written after it: mtimes are set last.
      const usr = statSync(join(root, 'usr'), { bigint: true });
      assert.equal(usr.mtimeNs, 1_600_000_000_123_456_789n);
      const bin = lstatSync(join(root, 'usr/bin'));
      assert.equal(bin.mode & 0o7777, 0o750);
      assert.equal(bin.uid, 5);
      assert.equal(bin.mtimeMs, T.getTime());
      assert.equal(statSync(join(root, 'empty')).size, 0);
    });
  });

  test('xattrs from SCHILY.xattr pax records, binary security.capability included', async () => {
    await withSandbox(async ({ root }) => {
      // cap_net_bind_service+ep, VFS_CAP_REVISION_2: the value holds NUL and high bytes.
      const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
      const odd = Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x3d, 0x80]);
      const layer = buildTar([
        { name: 'bin/', type: '5' },
        {
          name: 'bin/ping',
          mode: 0o755,
          data: 'ELF',
          pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.odd': odd, 'SCHILY.xattr.user.text': 'hello' },
        },
        { name: 'bin/dir/', type: '5', pax: { 'SCHILY.xattr.user.dir': 'yes' } },
      ]);
      await apply(layer, root);
      assert.deepEqual(lgetxattr(join(root, 'bin/ping'), 'security.capability'), cap);
      assert.deepEqual(lgetxattr(join(root, 'bin/ping'), 'user.odd'), odd);
      assert.equal(lgetxattr(join(root, 'bin/ping'), 'user.text')?.toString(), 'hello');
      assert.equal(lgetxattr(join(root, 'bin/dir'), 'user.dir')?.toString(), 'yes');
      assert.equal(statSync(join(root, 'bin/ping')).mode & 0o7777, 0o755);
    });
  });

  test('whiteouts delete lower files and directories recursively', async () => {
    await withSandbox(async ({ root }) => {
      mkdirSync(join(root, 'etc/conf.d/deep'), { recursive: true });
      writeFileSync(join(root, 'etc/conf.d/deep/x'), 'x');
      writeFileSync(join(root, 'etc/old'), 'old');
      writeFileSync(join(root, 'etc/keep'), 'keep');
      symlinkSync('/nonexistent', join(root, 'etc/link'));
      utimesSync(join(root, 'etc'), 1234, 1234);
      const layer = buildTar([
        { name: 'etc/.wh.conf.d', data: '' },
        { name: 'etc/.wh.old', data: '' },
        { name: 'etc/.wh.link', data: '' },
        { name: 'etc/.wh.never-existed', data: '' },
        { name: 'nodir/.wh.file', data: '' },
      ]);
      const r = await apply(layer, root);
      assert.equal(r.whiteouts, 5);
      assert.deepEqual(readdirSync(join(root, 'etc')), ['keep']);
      assert.ok(!existsSync(join(root, 'nodir')), 'a whiteout must not create its parent');
      // The layer has no entry for /etc itself: its times stay what the lower layer had.
      assert.equal(statSync(join(root, 'etc')).mtimeMs, 1234_000);
      assert.ok(!readdirSync(root, { recursive: true }).some((n) => String(n).includes('.wh.')));
    });
  });

  test('a whiteout never removes what the same layer wrote', async () => {
    await withSandbox(async ({ root }) => {
      mkdirSync(join(root, 'd'));
      writeFileSync(join(root, 'd/lower'), 'lower');
      const layer = buildTar([
        { name: 'd/', type: '5' },
        { name: 'd/new', data: 'new' },
        { name: 'd/.wh.new', data: '' },
        { name: 'd/.wh.d', data: '' },
        { name: '.wh.d', data: '' },
      ]);
      await apply(layer, root);
      // `d` itself was written by this layer: it stays, but what only the lower layer had goes.
      assert.deepEqual(readdirSync(join(root, 'd')), ['new']);
    });
  });

  test('opaque directories drop lower entries and keep this layer\'s, in any order', async () => {
    await withSandbox(async ({ root }) => {
      mkdirSync(join(root, 'a/b/c'), { recursive: true });
      writeFileSync(join(root, 'a/b/c/bar'), 'bar');
      writeFileSync(join(root, 'a/lower.txt'), 'l');
      mkdirSync(join(root, 'a/gone'));
      writeFileSync(join(root, 'a/gone/f'), 'f');
      mkdirSync(join(root, 'other'));
      writeFileSync(join(root, 'other/stay'), 's');
      // Marker after the new entries (the OCI spec's second example).
      const layer = buildTar([
        { name: 'a/', type: '5' },
        { name: 'a/b/', type: '5' },
        { name: 'a/b/c/', type: '5' },
        { name: 'a/b/c/foo', data: 'foo' },
        { name: 'a/.wh..wh..opq', data: '' },
        { name: 'a/after', data: 'after' },
      ]);
      await apply(layer, root);
      assert.deepEqual(readdirSync(join(root, 'a')).sort(), ['after', 'b']);
      assert.deepEqual(readdirSync(join(root, 'a/b/c')), ['foo']);
      assert.equal(readFileSync(join(root, 'other/stay'), 'utf8'), 's');
      assert.ok(!existsSync(join(root, 'a/.wh..wh..opq')));
    });
  });

  test('opaque marker first, then the directory\'s new content', async () => {
    await withSandbox(async ({ root }) => {
      mkdirSync(join(root, 'bin/tools'), { recursive: true });
      writeFileSync(join(root, 'bin/my-app-binary'), 'x');
      writeFileSync(join(root, 'bin/tools/one'), 'x');
      const layer = buildTar([
        { name: 'bin/', type: '5', mode: 0o711 },
        { name: 'bin/.wh..wh..opq', data: '' },
        { name: 'bin/new', data: 'n' },
      ]);
      await apply(layer, root);
      assert.deepEqual(readdirSync(join(root, 'bin')), ['new']);
      assert.equal(statSync(join(root, 'bin')).mode & 0o7777, 0o711);
    });
  });

  test('an entry of another type replaces what is there', async () => {
    await withSandbox(async ({ root }) => {
      writeFileSync(join(root, 'was-file'), 'f');
      mkdirSync(join(root, 'was-dir/sub'), { recursive: true });
      writeFileSync(join(root, 'was-dir/sub/x'), 'x');
      symlinkSync('target', join(root, 'was-link'));
      mkdirSync(join(root, 'dir-stays'));
      writeFileSync(join(root, 'dir-stays/lower'), 'l');
      writeFileSync(join(root, 'hardlinked'), 'first inode');
      const layer = buildTar([
        { name: 'was-file/', type: '5', mode: 0o700 },
        { name: 'was-file/child', data: 'c' },
        { name: 'was-dir', data: 'now a file' },
        { name: 'was-link', data: 'now a file too' },
        { name: 'dir-stays/', type: '5', mode: 0o705 },
        { name: 'alias', type: '1', linkname: 'hardlinked' },
        { name: 'hardlinked', data: 'rewritten' },
      ]);
      await apply(layer, root);
      assert.ok(lstatSync(join(root, 'was-file')).isDirectory());
      assert.equal(readFileSync(join(root, 'was-file/child'), 'utf8'), 'c');
      assert.equal(readFileSync(join(root, 'was-dir'), 'utf8'), 'now a file');
      assert.ok(lstatSync(join(root, 'was-link')).isFile());
      // Directory over directory: attributes change, lower content stays.
      assert.equal(statSync(join(root, 'dir-stays')).mode & 0o7777, 0o705);
      assert.equal(readFileSync(join(root, 'dir-stays/lower'), 'utf8'), 'l');
      // A modified file is a new inode: the hard link made to the old one keeps the old content.
      assert.equal(readFileSync(join(root, 'alias'), 'utf8'), 'first inode');
      assert.equal(readFileSync(join(root, 'hardlinked'), 'utf8'), 'rewritten');
    });
  });

  test('hard links to lower files and through symlinked parents; missing targets fail', async () => {
    await withSandbox(async ({ root }) => {
      mkdirSync(join(root, 'usr/lib'), { recursive: true });
      writeFileSync(join(root, 'usr/lib/libx.so'), 'lib');
      symlinkSync('usr/lib', join(root, 'lib'));
      const layer = buildTar([
        { name: 'lib/liby.so', type: '1', linkname: 'lib/libx.so' },
        { name: 'copy', type: '1', linkname: './usr/lib/libx.so' },
      ]);
      await apply(layer, root);
      const ino = statSync(join(root, 'usr/lib/libx.so')).ino;
      // The entry went through the (in-root) /lib symlink, like a merged-/usr system expects.
      assert.equal(statSync(join(root, 'usr/lib/liby.so')).ino, ino);
      assert.equal(statSync(join(root, 'copy')).ino, ino);
      assert.ok(lstatSync(join(root, 'lib')).isSymbolicLink());
      await assert.rejects(apply(buildTar([{ name: 'bad', type: '1', linkname: 'no/such' }]), root), { code: 'EAPPLY_LINK_TARGET' });
    });
  });

  test('long names: pax path/linkpath and GNU long-name entries', async () => {
    await withSandbox(async ({ root }) => {
      const deep = `${'d'.repeat(90)}/${'e'.repeat(90)}/${'f'.repeat(120)}`;
      const layer = buildTar([
        { name: 'short-pax', pax: { path: `${deep}/pax-file` }, data: 'pax' },
        { name: 'short-gnu', gnuLong: true, data: 'gnu' },
        { name: `${deep}/gnu-file`, gnuLong: true, data: 'gnu' },
        { name: `${deep}/gnu-link`, type: '2', gnuLong: true, linkname: `${'t'.repeat(150)}` },
        { name: 'pax-link', type: '2', pax: { linkpath: `/${'u'.repeat(200)}` } },
        { name: 'pax-hard', type: '1', pax: { linkpath: `${deep}/pax-file` } },
      ]);
      await apply(layer, root);
      assert.equal(readFileSync(join(root, deep, 'pax-file'), 'utf8'), 'pax');
      assert.equal(readFileSync(join(root, deep, 'gnu-file'), 'utf8'), 'gnu');
      assert.equal(readlinkSync(join(root, deep, 'gnu-link')), 't'.repeat(150));
      assert.equal(readlinkSync(join(root, 'pax-link')), `/${'u'.repeat(200)}`);
      assert.equal(statSync(join(root, 'pax-hard')).ino, statSync(join(root, deep, 'pax-file')).ino);
    });
  });

  test('gzip and zstd layers are detected by magic; diffID is the uncompressed digest', async () => {
    await withSandbox(async ({ root }) => {
      const big = Buffer.alloc(3 << 20);
      for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i * 2654435761 >>> 0, i);
      const layer = buildTar([
        { name: 'big', data: big },
        { name: 'small', data: 'small' },
      ]);
      const gz = await applyLayer(Readable.from([gzipSync(layer)]), root);
      assert.equal(gz.compression, 'gzip');
      assert.equal(gz.diffId, sha256(layer));
      assert.deepEqual(readFileSync(join(root, 'big')), big);
      rmSync(join(root, 'big'));
      const zst = new Compressor().compress(layer);
      // Fed in small pieces, so headers and bodies straddle chunk boundaries.
      const pieces: Buffer[] = [];
      for (let i = 0; i < zst.length; i += 777) pieces.push(zst.subarray(i, i + 777));
      const z = await applyLayer(Readable.from(pieces), root);
      assert.equal(z.compression, 'zstd');
      assert.equal(z.diffId, sha256(layer));
      assert.equal(z.bytes, big.length + 5);
      assert.deepEqual(readFileSync(join(root, 'big')), big);
    });
  });

  test('zero blocks become holes, content and size unchanged', async () => {
    await withSandbox(async ({ root }) => {
      const mixed = Buffer.concat([Buffer.alloc(5000, 0x61), Buffer.alloc(256 << 10), Buffer.from('middle'), Buffer.alloc(64 << 10)]);
      const zeros = Buffer.alloc(1 << 20);
      const layer = buildTar([
        { name: 'mixed', data: mixed },
        { name: 'zeros', data: zeros },
      ]);
      const pieces: Buffer[] = [];
      for (let i = 0; i < layer.length; i += 1000) pieces.push(layer.subarray(i, i + 1000));
      const r = await applyLayer(Readable.from(pieces), root);
      assert.equal(r.bytes, mixed.length + zeros.length);
      assert.deepEqual(readFileSync(join(root, 'mixed')), mixed);
      assert.deepEqual(readFileSync(join(root, 'zeros')), zeros);
      assert.equal(statSync(join(root, 'zeros')).blocks, 0);
      // 5000 bytes of data and "middle" need 3 blocks of 4 KiB (24 sectors), not 82.
      assert.ok(statSync(join(root, 'mixed')).blocks <= 24, `mixed uses ${statSync(join(root, 'mixed')).blocks} sectors`);
    });
  });

  test('entry names that climb out with .. are rejected', async () => {
    await withSandbox(async ({ root, outside }) => {
      for (const name of ['a/../../outside/etc/passwd', '../outside/etc/passwd', 'x/../../../../etc/passwd']) {
        await assert.rejects(apply(buildTar([{ name, data: 'pwned' }]), root), { code: 'EAPPLY_UNSAFE_PATH' });
      }
      await assert.rejects(apply(buildTar([{ name: 'h', type: '1', linkname: '../outside/etc/passwd' }]), root), {
        code: 'EAPPLY_UNSAFE_PATH',
      });
      assert.equal(readFileSync(join(outside, 'etc/passwd'), 'utf8'), 'sentinel\n');
      // Leading slashes and harmless dots stay inside.
      await apply(buildTar([{ name: '/abs/./file', data: 'in' }, { name: 'a/../b', data: 'b' }]), root);
      assert.equal(readFileSync(join(root, 'abs/file'), 'utf8'), 'in');
      assert.equal(readFileSync(join(root, 'b'), 'utf8'), 'b');
    });
  });

  test('writing through symlinks planted by the layer stays inside the root', async () => {
    await withSandbox(async ({ root, outside }) => {
      const layer = buildTar([
        { name: 'slash', type: '2', linkname: '/' },
        { name: 'slash/etc/passwd', data: 'via slash' },
        { name: 'host', type: '2', linkname: outside },
        { name: 'host/etc/passwd', data: 'via host path' },
        { name: 'up', type: '2', linkname: '../../../..' },
        { name: 'up/escaped', data: 'via dotdot' },
        { name: 'abs-passwd', type: '2', linkname: join(outside, 'etc/passwd') },
        { name: 'abs-passwd', data: 'replaces the link, not the target' },
        { name: 'rel-passwd', type: '2', linkname: '../outside/etc/passwd' },
        { name: 'hard-to-link', type: '1', linkname: 'rel-passwd' },
        { name: 'slash/.wh.nothing', data: '' },
      ]);
      await apply(layer, root);
      assert.equal(readFileSync(join(root, 'etc/passwd'), 'utf8'), 'via slash');
      assert.equal(readFileSync(join(root, outside, 'etc/passwd'), 'utf8'), 'via host path');
      assert.equal(readFileSync(join(root, 'escaped'), 'utf8'), 'via dotdot');
      assert.ok(lstatSync(join(root, 'abs-passwd')).isFile());
      // A hard link to a symlink links the symlink itself.
      assert.ok(lstatSync(join(root, 'hard-to-link')).isSymbolicLink());
      assert.equal(readlinkSync(join(root, 'hard-to-link')), '../outside/etc/passwd');
      // Whiteouts through a planted symlink resolve inside the root too.
      const wh = buildTar([{ name: 'host/etc/.wh.passwd', data: '' }, { name: 'up/.wh.escaped', data: '' }]);
      await apply(wh, root);
      assert.ok(!existsSync(join(root, outside, 'etc/passwd')));
      assert.ok(!existsSync(join(root, 'escaped')));
    });
  });

  test('a parent that is a regular file is an error, not a write elsewhere', async () => {
    await withSandbox(async ({ root }) => {
      writeFileSync(join(root, 'file'), 'f');
      await assert.rejects(apply(buildTar([{ name: 'file/child', data: 'x' }]), root), { code: 'EAPPLY_NOT_DIR' });
    });
  });

  test('truncated and corrupt archives fail with the byte offset', async () => {
    await withSandbox(async ({ root }) => {
      const layer = buildTar([{ name: 'f', data: Buffer.alloc(2000, 1) }]);
      await assert.rejects(apply(layer.subarray(0, 1024), root), /byte offset/);
      const bad = Buffer.from(layer);
      bad[10] = 0x41; // breaks the header checksum
      await assert.rejects(apply(bad, root), { name: 'FormatError', message: /checksum.*|.*checksum/ });
    });
  });

  test('ext4 sample layers: layer 1 over layer 0 gives the expected /etc', async () => {
    await withSandbox(async ({ root }) => {
      const dir = join(repoRoot, 'testdata/overlaybd-samples');
      const r0 = await applyLayer(createReadStream(join(dir, 'ext4-layer0.input.tar')), root);
      assert.equal(r0.diffId, 'sha256:42193688503ba4d5ef0d0c740812d8d237f31bf0813e88e4a57103b42eade828');
      assert.equal(statSync(join(root, 'usr/bin/blob')).size, 200000);
      const r1 = await applyLayer(createReadStream(join(dir, 'ext4-layer1.input.tar')), root);
      assert.equal(r1.diffId, 'sha256:c9aff649691019519e9a918cb7c3faa4d5735d0ef1e1c47f51b8bc5b02d6f58f');
      assert.equal(r1.whiteouts, 1);
      assert.equal(readFileSync(join(root, 'etc/hello.txt'), 'utf8'), 'hello overwritten by B\n');
      assert.equal(readFileSync(join(root, 'etc/b.txt'), 'utf8'), 'layer B file\n');
      assert.ok(!existsSync(join(root, 'etc/gone.txt')));
      assert.ok(!existsSync(join(root, 'etc/.wh.gone.txt')));
    });
  });
});
