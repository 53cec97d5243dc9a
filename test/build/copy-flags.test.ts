// COPY --exclude and COPY --parents through `obdkit build`, with real parts: the fixture context in
// testdata/build/copy-flags is copied aside (so a directory can get a mode git cannot hold, and a
// symlink `link-to-src` is added), built
// FROM scratch and onto a busybox image from a test registry, and the trees are read back from
// `type=local` outputs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, cpSync, existsSync, lstatSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { runBuild, type BuildCliOptions } from '../../src/cli/build.js';
import { repoRoot } from '../helpers/oracle.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { parentsPivot, wildcardBase } from '../../worker/build/glob.js';
import { pushBusyboxBase, tempDir } from './fixtures.js';

function missingPrerequisite(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['/dev/fuse', '/dev/loop-control', '/bin/busybox']) if (!existsSync(p)) return `needs ${p}`;
  return undefined;
}

/** Every non-directory below `dir`, relative and sorted. */
function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const n of readdirSync(d)) {
      const r = rel === '' ? n : `${rel}/${n}`;
      if (lstatSync(join(d, n)).isDirectory()) walk(join(d, n), r);
      else out.push(r);
    }
  };
  walk(dir, '');
  return out.sort();
}

describe('source path helpers', () => {
  test('--parents keeps paths below the root, or below a /./ pivot (a leading ./ is no pivot)', () => {
    assert.equal(parentsPivot('./x/y/*.txt'), '/');
    assert.equal(parentsPivot('x/y'), '/');
    assert.equal(parentsPivot('x/./y/*.txt'), '/x');
    assert.equal(parentsPivot('./a/b/./c'), '/a/b');
    assert.equal(parentsPivot('/./x'), '/');
  });

  test('a wildcard pattern starts from its fixed directory', () => {
    assert.equal(wildcardBase('x/y/*.txt'), '/x/y');
    assert.equal(wildcardBase('x/*/*'), '/x');
    assert.equal(wildcardBase('*.txt'), '/');
    assert.equal(wildcardBase('x/y'), undefined);
  });
});

describe('COPY --exclude and --parents', { skip: missingPrerequisite() }, () => {
  let work: ReturnType<typeof tempDir>;
  let reg: RunningRegistry | undefined;
  let ctx: string;
  let root: string;
  const lines: string[] = [];

  const build = (output: string, extra: Partial<BuildCliOptions> = {}) =>
    runBuild(ctx, { buildArg: [], secret: [], cache: true, progress: 'plain', root, output, ...extra }, (s) => {
      lines.push(s);
      if (process.env.OBDKIT_TEST_VERBOSE) process.stderr.write(s);
    });

  before(() => {
    work = tempDir('obdkit-copy-flags-');
    root = join(work.path, 'root');
    ctx = join(work.path, 'ctx');
    cpSync(join(repoRoot, 'testdata/build/copy-flags'), ctx, { recursive: true });
    chmodSync(join(ctx, 'src/deep/n1'), 0o750);
    symlinkSync('src', join(ctx, 'link-to-src'));
  });

  after(async () => {
    await reg?.stop();
    work?.remove();
  });

  test('FROM scratch: excludes of files, subtrees and ** patterns; --parents with globs, a /./ pivot and both flags', async () => {
    const out = join(work.path, 'out');
    try {
      await build(`type=local,dest=${out}`);
    } catch (err) {
      throw new Error(`build failed: ${(err as Error).message}\n${lines.join('')}`);
    }
    // `*.tmp` and `cache` match below the copied directory only at its top level.
    assert.deepEqual(files(join(out, 'ex1')), ['a.txt', 'deep/n1/n2/e.txt', 'deep/n1/n2/f.tmp', 'keep/c.txt', 'keep/d.tmp']);
    // `**/*.tmp` reaches every depth; the directories remade around the excluded files keep their modes.
    assert.deepEqual(files(join(out, 'ex2')), ['a.txt', 'cache/x.bin', 'deep/n1/n2/e.txt', 'keep/c.txt']);
    assert.equal(lstatSync(join(out, 'ex2/deep/n1')).mode & 0o7777, 0o750);
    assert.equal(readFileSync(join(out, 'ex2/deep/n1/n2/e.txt'), 'utf8'), 'e\n');
    assert.deepEqual(files(join(out, 'ex3')), ['a.txt']);
    assert.deepEqual(files(join(out, 'ex4')), ['a.txt', 'cache/x.bin', 'deep/n1/n2/e.txt', 'deep/n1/n2/f.tmp', 'keep/c.txt', 'keep/d.tmp']);
    assert.deepEqual(files(join(out, 'p1')), ['x/y/a.txt', 'x/y/b.txt']);
    assert.deepEqual(files(join(out, 'p2')), ['y/a.txt', 'y/b.txt']);
    assert.deepEqual(files(join(out, 'p3')), ['x/z/d.txt']);
    assert.equal(readFileSync(join(out, 'p3/x/z/d.txt'), 'utf8'), 'zd\n');
    assert.deepEqual(files(join(out, 'p4')), ['x/y/a.txt', 'x/y/c.md']);
    assert.deepEqual(files(join(out, 'p5')), ['x/y/a.txt', 'x/y/b.txt', 'x/z/d.txt']);
  });

  test('onto a busybox image: --chown on remade directories, --parents with a pivot and an exclude', async () => {
    reg = await startRegistry();
    const base = await pushBusyboxBase(reg.host, work.path);
    const out = join(work.path, 'out-base');
    try {
      await build(`type=local,dest=${out}`, { file: join(ctx, 'base.Dockerfile'), buildArg: [`BASE=${base}`] });
    } catch (err) {
      throw new Error(`build failed: ${(err as Error).message}\n${lines.join('')}`);
    }
    assert.equal(readFileSync(join(out, 'etc/base-file'), 'utf8'), 'from the base image\n');
    assert.deepEqual(files(join(out, 'srv/deep')), ['n1/n2/e.txt']);
    for (const p of ['srv/deep/n1', 'srv/deep/n1/n2', 'srv/deep/n1/n2/e.txt']) {
      const st = lstatSync(join(out, p));
      assert.deepEqual([st.uid, st.gid], [1000, 1000], p);
    }
    assert.equal(lstatSync(join(out, 'srv/deep/n1')).mode & 0o7777, 0o750);
    assert.deepEqual(files(join(out, 'srv/y')), ['a.txt', 'c.md']);
  });
});
