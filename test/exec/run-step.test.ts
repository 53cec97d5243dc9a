// RUN steps under real runc over a busybox rootfs (plain dir, and a loop-mounted ext4 like the
// device path). Needs root, runc and busybox-static.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runStep, type RunStepOptions } from '../../worker/exec/run-step.js';
import { buildRuntimeSpec } from '../../worker/exec/runtime-spec.js';
import { runcList, runcRun } from '../../worker/exec/runc.js';
import { recoverStaleSteps } from '../../worker/exec/recover.js';
import { ObdkitError } from '../../src/util/errors.js';
import { makeBusyboxRootfs, makeExt4Rootfs, tempDir } from './fixtures.js';

let root: string;
let state: string;

before(() => {
  root = tempDir('rootfs');
  state = tempDir('state');
  makeBusyboxRootfs(root);
});

after(() => {
  rmSync(root, { recursive: true, force: true });
  rmSync(state, { recursive: true, force: true });
});

async function run(opts: Partial<RunStepOptions> & { args: string[] }): Promise<string[]> {
  const lines: string[] = [];
  await runStep({ rootfs: root, stateRoot: state, onOutput: (_s, l) => lines.push(l), ...opts });
  return lines;
}

function sh(script: string): string[] {
  return ['/bin/sh', '-c', script];
}

function bundlesLeft(): string[] {
  const d = join(state, 'bundles');
  return existsSync(d) ? readdirSync(d) : [];
}

describe('runStep', () => {
  test('streams output line by line and applies env, cwd, user and hostname', async () => {
    const seen: Array<[string, string]> = [];
    await runStep({
      rootfs: root,
      stateRoot: state,
      args: sh('echo out1; echo err1 >&2; echo "$FOO"; pwd; id -u; id -g; id -G; hostname; touch made-here'),
      env: ['FOO=bar baz'],
      cwd: '/work/dir',
      user: 'app',
      hostname: 'stephost',
      onOutput: (s, l) => seen.push([s, l]),
    });
    assert.deepEqual(seen.filter(([s]) => s === 'stderr'), [['stderr', 'err1']]);
    assert.deepEqual(
      seen.filter(([s]) => s === 'stdout').map(([, l]) => l),
      ['out1', 'bar baz', '/work/dir', '1000', '1000', '1000 10 50', 'stephost'],
    );
    assert.ok(existsSync(join(root, 'work/dir/made-here')));
    assert.deepEqual(bundlesLeft(), []);
    // Mount points runc had to create are gone again; the layer holds only what the step wrote.
    for (const p of ['proc', 'sys', 'dev', 'etc/hosts', 'etc/resolv.conf']) assert.equal(existsSync(join(root, p)), false, p);
  });

  test('default user is root; PATH is set; /etc/hosts names the hostname', async () => {
    const lines = await run({ args: sh('id -u; echo $PATH; grep buildkitsandbox /etc/hosts | wc -l') });
    assert.deepEqual(lines, ['0', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', '1']);
  });

  test('runs on a loop-mounted ext4 rootfs', async () => {
    const fs = makeExt4Rootfs();
    try {
      const lines: string[] = [];
      await runStep({
        rootfs: fs.root,
        stateRoot: state,
        args: sh('echo hello > /home/app/srv.txt; cat /home/app/srv.txt; id -un'),
        user: 'app',
        onOutput: (_s, l) => lines.push(l),
      });
      assert.deepEqual(lines, ['hello', 'app']);
      assert.equal(readFileSync(join(fs.root, 'home/app/srv.txt'), 'utf8'), 'hello\n');
    } finally {
      fs.close();
    }
  });

  test('the container cgroup lies under /obdkit, outside the caller\'s, and default devices work', async () => {
    const lines = await run({ args: sh('grep -E "^[0-9]+:memory:" /proc/self/cgroup | cut -d: -f3; echo x > /dev/null; head -c 4 /dev/urandom | wc -c') });
    assert.match(lines[0]!, /^\/obdkit\/obdkit-[0-9a-f-]+$/);
    assert.deepEqual(lines.slice(1), ['4']);
  });

  test('a memory limit lands on the step\'s own cgroup, not the caller\'s', async () => {
    let limit = '';
    await runStep({
      rootfs: root,
      stateRoot: state,
      memoryLimitBytes: 64 << 20,
      pidsLimit: 100,
      // The step waits until the test has read its cgroup from the host side.
      args: sh('grep -E "^[0-9]+:memory:" /proc/self/cgroup | cut -d: -f3; while [ ! -e /tmp/go ]; do sleep 0.05; done'),
      onOutput: (_s, line) => {
        if (!line.startsWith('/obdkit/')) return;
        try {
          limit = readFileSync(join('/sys/fs/cgroup/memory', line, 'memory.limit_in_bytes'), 'utf8').trim();
        } finally {
          writeFileSync(join(root, 'tmp/go'), '');
        }
      },
    });
    rmSync(join(root, 'tmp/go'));
    assert.equal(limit, String(64 << 20));
  });

  test('a failing step reports command, exit code and the last lines', async () => {
    const script = 'for i in $(seq 1 30); do echo line$i; done; echo boom >&2; exit 3';
    await assert.rejects(run({ args: sh(script) }), (err: unknown) => {
      assert.ok(err instanceof ObdkitError);
      assert.equal(err.code, 'EEXEC');
      assert.equal(err.context.exitCode, 3);
      assert.match(err.message, /exit code: 3/);
      assert.ok(err.message.includes(script));
      assert.ok(err.message.includes('line30') && err.message.includes('boom'));
      assert.ok(!err.message.includes('line10\n'), 'only the tail is kept');
      return true;
    });
    assert.deepEqual(bundlesLeft(), []);
  });

  test('secret mount is readable at /run/secrets/<id> with mode 0400 and never lands in the rootfs', async () => {
    const lines = await run({
      args: sh('cat /run/secrets/x; echo; stat -c %a /run/secrets/x; grep -c /run/secrets/x /proc/mounts'),
      mounts: [{ type: 'secret', id: 'x', data: Buffer.from('t0ps3cret') }],
    });
    assert.deepEqual(lines, ['t0ps3cret', '400', '1']);
    assert.equal(existsSync(join(root, 'run/secrets')), false);
    // grep exits 1 when nothing in the rootfs holds the secret's bytes.
    assert.equal(spawnSync('grep', ['-rlF', 't0ps3cret', root]).status, 1);
  });

  test('a secret can be an environment variable only', async () => {
    const lines = await run({
      args: sh('echo "$TOKEN"; ls /run/secrets 2>&1 | wc -l'),
      mounts: [{ type: 'secret', id: 'tok', env: 'TOKEN', data: Buffer.from('abc') }],
      network: 'default',
    });
    assert.deepEqual(lines, ['abc', '1']);
  });

  test('cache mount persists between runs and stays out of the rootfs', async () => {
    await run({ args: sh('echo kept > /var/cache/x/f'), mounts: [{ type: 'cache', id: 'c1', target: '/var/cache/x' }] });
    const lines = await run({ args: sh('cat /var/cache/x/f'), mounts: [{ type: 'cache', id: 'c1', target: '/var/cache/x' }] });
    assert.deepEqual(lines, ['kept']);
    const other = await run({ args: sh('ls /var/cache/x | wc -l'), mounts: [{ type: 'cache', id: 'c2', target: '/var/cache/x' }] });
    assert.deepEqual(other, ['0']);
    assert.equal(existsSync(join(root, 'var')), false);
  });

  test('a cache subpath planted as a symlink by an earlier step stays inside the cache', async () => {
    const outside = tempDir('outside');
    try {
      writeFileSync(join(outside, 'host-file'), 'host');
      await run({ args: sh(`ln -s ${outside} /c/esc; ln -s ../../../../../../.. /c/up`), mounts: [{ type: 'cache', id: 'c-esc', target: '/c' }] });
      const a = await run({ args: sh('ls /m | wc -l; touch /m/written'), mounts: [{ type: 'cache', id: 'c-esc', target: '/m', subpath: 'esc' }] });
      assert.deepEqual(a, ['0']);
      const b = await run({ args: sh('ls /m'), mounts: [{ type: 'cache', id: 'c-esc', target: '/m', subpath: 'up' }] });
      // The absolute target of 'esc' was created inside the cache (its /tmp/...), not on the host.
      assert.deepEqual(b.sort(), ['esc', 'tmp', 'up']);
      assert.deepEqual(readdirSync(outside), ['host-file']);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  test('a locked cache mount serialises concurrent steps', async () => {
    const step = (name: string) =>
      run({
        args: sh(`echo ${name}-start >> /c/log; sleep 0.3; echo ${name}-end >> /c/log`),
        mounts: [{ type: 'cache', id: 'c-lock', target: '/c', sharing: 'locked' }],
      });
    await Promise.all([step('a'), step('b')]);
    const lines = await run({ args: sh('cat /c/log'), mounts: [{ type: 'cache', id: 'c-lock', target: '/c' }] });
    assert.equal(lines.length, 4);
    assert.equal(lines[0]!.split('-')[0], lines[1]!.split('-')[0], `interleaved: ${lines.join(',')}`);
    assert.equal(lines[2]!.split('-')[0], lines[3]!.split('-')[0], `interleaved: ${lines.join(',')}`);
  });

  test('tmpfs mount is a tmpfs and its content is discarded', async () => {
    const lines = await run({
      args: sh('echo x > /scratch/f; grep " /scratch " /proc/mounts | cut -d" " -f3'),
      mounts: [{ type: 'tmpfs', target: '/scratch', sizeBytes: 1 << 20 }],
    });
    assert.deepEqual(lines, ['tmpfs']);
    assert.equal(existsSync(join(root, 'scratch')), false);
  });

  test('bind mounts: read-only by default, writable ones do not modify the source', async () => {
    const src = tempDir('bindsrc');
    try {
      mkdirSync(join(src, 'sub'));
      writeFileSync(join(src, 'sub/data'), 'from-source');
      await assert.rejects(
        run({ args: sh('cat /in/data; touch /in/new'), mounts: [{ type: 'bind', target: '/in', source: src, subpath: 'sub' }] }),
        /Read-only file system/,
      );
      const lines = await run({
        args: sh('cat /in/data; echo; echo changed > /in/data; cat /in/data'),
        mounts: [{ type: 'bind', target: '/in', source: src, subpath: 'sub', readonly: false }],
      });
      assert.deepEqual(lines, ['from-source', 'changed']);
      assert.equal(readFileSync(join(src, 'sub/data'), 'utf8'), 'from-source');
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });

  test('bind subpath cannot leave the source through a symlink', async () => {
    const src = tempDir('bindsrc');
    const secret = tempDir('hostsecret');
    try {
      writeFileSync(join(secret, 'host-only'), 'host');
      symlinkSync(secret, join(src, 'link'));
      await assert.rejects(
        run({ args: sh('ls /in'), mounts: [{ type: 'bind', target: '/in', source: src, subpath: 'link' }] }),
        /ENOENT/,
      );
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(secret, { recursive: true, force: true });
    }
  });

  test('network none has only loopback; host shares the host interfaces', async () => {
    const none = await run({ args: sh('ls /sys/class/net'), network: 'none' });
    assert.deepEqual(none, ['lo']);
    const host = await run({ args: sh('ls /sys/class/net | sort'), network: 'host' });
    assert.deepEqual(host, readdirSync('/sys/class/net').sort());
  });

  test('cancellation kills the container and leaves neither container nor bundle', async () => {
    const ac = new AbortController();
    const p = runStep({
      rootfs: root,
      stateRoot: state,
      args: sh('echo started; sleep 60'),
      signal: ac.signal,
      onOutput: (_s, l) => {
        if (l === 'started') ac.abort();
      },
    });
    await assert.rejects(p, { code: 'ECANCELED' });
    const ids = await runcList();
    assert.equal(ids.filter((i) => i.startsWith('obdkit-')).length, 0);
    assert.deepEqual(bundlesLeft(), []);
  });

  test('recovery removes a container and bundle a dead daemon left behind', async () => {
    // Simulate the leftovers: a bundle and a created (never started) container from it.
    const id = `obdkit-stale-${process.pid}`;
    const bundle = join(state, 'bundles', id);
    mkdirSync(bundle, { recursive: true });
    const spec = buildRuntimeSpec({
      rootfs: root,
      args: ['/bin/true'],
      env: [],
      cwd: '/',
      user: { uid: 0, gid: 0 },
      hostname: 'x',
      hostNetwork: false,
      extraMounts: [],
      cgroupsPath: `/obdkit/${id}`,
      nofile: 1024,
    });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    spawnSync('runc', ['create', '--bundle', bundle, id], { stdio: 'ignore' });
    assert.ok((await runcList()).includes(id));
    const report = await recoverStaleSteps(state);
    assert.deepEqual(report.containers, [id]);
    assert.ok(!(await runcList()).includes(id));
    assert.deepEqual(bundlesLeft(), []);
    for (const p of ['proc', 'sys', 'dev']) rmSync(join(root, p), { recursive: true, force: true });
  });

  test('an already aborted signal runs nothing', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(run({ args: sh('touch /should-not-exist'), signal: ac.signal }), { code: 'ECANCELED' });
    assert.equal(existsSync(join(root, 'should-not-exist')), false);
  });
});

describe('escapes', () => {
  test('WORKDIR /proc/self/fd/<n> is refused before runc runs', async () => {
    for (const fd of [3, 4, 5, 7, 8]) {
      await assert.rejects(run({ args: sh('ls ..'), cwd: `/proc/self/fd/${fd}` }), { code: 'EWORKDIR' });
    }
    assert.equal(existsSync(join(root, 'proc')), false);
  });

  test('runc itself refuses a cwd in /proc/self/fd (CVE-2024-21626)', async () => {
    // Bypasses our own check to see that the runtime's protection holds too.
    const marker = tempDir('hostmarker');
    try {
      writeFileSync(join(marker, 'HOST_MARKER'), '');
      for (const fd of [3, 4, 5, 6, 7, 8, 9]) {
        const id = `obdkit-cve-${process.pid}-${fd}`;
        const bundle = join(state, 'cve-bundle');
        mkdirSync(bundle, { recursive: true });
        try {
          const spec = buildRuntimeSpec({
            rootfs: root,
            args: sh('ls -a ../../../; ls ../../../../tmp 2>/dev/null | grep -c obdkit-hostmarker || true'),
            env: [],
            cwd: `/proc/self/fd/${fd}`,
            user: { uid: 0, gid: 0 },
            hostname: 'x',
            hostNetwork: false,
            extraMounts: [],
            cgroupsPath: `/obdkit/${id}`,
            nofile: 1024,
          });
          writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
          const r = await runcRun({ id, bundle });
          const output = r.tail.join('\n');
          assert.ok(!output.includes('obdkit-hostmarker'), `fd ${fd} reached the host: ${output}`);
          assert.notEqual(r.exitCode, 0, `fd ${fd}: runc accepted the cwd: ${output}`);
        } finally {
          rmSync(bundle, { recursive: true, force: true });
        }
      }
    } finally {
      rmSync(marker, { recursive: true, force: true });
      rmSync(join(root, 'proc'), { recursive: true, force: true });
      rmSync(join(root, 'dev'), { recursive: true, force: true });
      rmSync(join(root, 'sys'), { recursive: true, force: true });
    }
  });

  test('a workdir through a symlink pointing out of the rootfs stays inside', async () => {
    const outside = tempDir('outside');
    try {
      symlinkSync('../../../../../../..' + outside, join(root, 'escape'));
      const lines = await run({ args: sh('pwd; touch f'), cwd: '/escape/sub' });
      assert.deepEqual(lines, [outside + '/sub']);
      assert.deepEqual(readdirSync(outside), []);
      assert.ok(existsSync(join(root, outside, 'sub/f')));
    } finally {
      rmSync(join(root, 'escape'), { force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  test('a mount target through a symlink out of the rootfs neither mounts nor cleans up on the host', async () => {
    const outside = tempDir('outside');
    try {
      writeFileSync(join(outside, 'keep'), 'host file');
      symlinkSync(outside, join(root, 'mnt-escape'));
      const lines = await run({
        args: sh('cat /mnt-escape/s/x'),
        mounts: [{ type: 'secret', id: 'x', target: '/mnt-escape/s/x', data: Buffer.from('inner') }],
      });
      assert.deepEqual(lines, ['inner']);
      assert.deepEqual(readdirSync(outside), ['keep']);
      assert.equal(existsSync(join(root, outside, 's')), false);
    } finally {
      rmSync(join(root, 'mnt-escape'), { force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
