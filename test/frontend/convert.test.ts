// The Dockerfile frontend: each instruction and flag, checked through the graph and image config it
// produces, and the errors it reports (with file and line). Base image configs come through the
// frontend's injected resolver, here a plain table of configs.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { convertDockerfile, type ConvertOptions, type ConvertResult, type ResolvedImage } from '../../frontend/convert.js';
import { ObdkitError } from '../../src/util/errors.js';
import { topoOrder, type CopyAction, type ExecOp, type FileOp, type Platform, type Vertex } from '../../src/solver/ops.js';

const fixtures = fileURLToPath(new URL('../../../testdata/dockerfiles/', import.meta.url));
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const ARM64: Platform = { os: 'linux', architecture: 'arm64' };
const digestOf = (c: string): string => 'sha256:' + c.repeat(64);

const IMAGES: Record<string, ResolvedImage> = {
  'docker.io/library/alpine:3.20': {
    digest: digestOf('a'),
    config: { os: 'linux', architecture: 'amd64', config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] } },
  },
  'docker.io/library/node:20': {
    digest: digestOf('b'),
    config: {
      os: 'linux',
      architecture: 'amd64',
      config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_VERSION=20.1.0'], WorkingDir: '/home/node', User: 'node', Cmd: ['node'], Entrypoint: ['docker-entrypoint.sh'] },
    },
  },
  'docker.io/library/onbuild-base:1': {
    digest: digestOf('c'),
    config: { os: 'linux', architecture: 'amd64', config: { Env: ['PATH=/bin'], OnBuild: ['COPY . /app/', 'RUN make -C /app'] } },
  },
};

function resolver() {
  const calls: string[] = [];
  const resolve = async (ref: string, platform: Platform): Promise<ResolvedImage> => {
    calls.push(`${ref} ${platform.os}/${platform.architecture}`);
    const img = IMAGES[ref];
    if (img) return img;
    return { digest: digestOf('f'), config: { os: platform.os, architecture: platform.architecture, config: {} } };
  };
  return { resolve, calls };
}

async function build(dockerfile: string, opts: Partial<ConvertOptions> = {}): Promise<ConvertResult & { calls: string[] }> {
  const r = resolver();
  const res = await convertDockerfile({ dockerfile, resolveImageConfig: r.resolve, buildPlatform: AMD64, ...opts });
  return { ...res, calls: r.calls };
}

/** Vertices from the target back to its sources, dependencies first. */
const steps = (r: ConvertResult): Vertex[] => topoOrder(r.graph, r.target);
const named = (r: ConvertResult, re: RegExp): Vertex => {
  const v = Object.values(r.graph.vertices).find((x) => re.test(x.name));
  assert.ok(v, `no vertex named ${re}: ${Object.values(r.graph.vertices).map((x) => x.name).join(' | ')}`);
  return v;
};
const execOf = (v: Vertex): ExecOp => {
  assert.equal(v.op.kind, 'exec');
  return v.op as ExecOp;
};
const fileOf = (v: Vertex): FileOp => {
  assert.equal(v.op.kind, 'file');
  return v.op as FileOp;
};

async function rejectsAt(dockerfile: string, line: number, msg: RegExp, opts: Partial<ConvertOptions> = {}): Promise<void> {
  await assert.rejects(build(dockerfile, { filename: 'app/Dockerfile', ...opts }), (err: unknown) => {
    assert.ok(err instanceof ObdkitError, String(err));
    assert.equal(err.context.file, 'app/Dockerfile');
    assert.equal(err.context.line, line, err.message);
    assert.match(err.message, msg);
    assert.ok(err.message.startsWith(`app/Dockerfile:${line}: `), err.message);
    return true;
  });
}

describe('FROM', () => {
  test('image base: normalised, pinned by the resolved digest, counted as step 1', async () => {
    const r = await build('FROM alpine:3.20\nRUN true\n');
    const [from, run] = steps(r);
    assert.deepEqual(from!.op, { kind: 'image', ref: `docker.io/library/alpine:3.20@${digestOf('a')}`, platform: AMD64 });
    assert.equal(from!.name, `[1/2] FROM docker.io/library/alpine:3.20@${digestOf('a')}`);
    assert.deepEqual(from!.location, { file: 'Dockerfile', line: 1, endLine: 1 });
    assert.equal(run!.name, '[2/2] RUN true');
    assert.deepEqual(r.calls, ['docker.io/library/alpine:3.20 linux/amd64']);
  });

  test('scratch: empty filesystem, default PATH, not a step', async () => {
    const r = await build('FROM scratch\nCOPY a /a\n');
    const [scratch] = steps(r);
    assert.deepEqual(scratch!.op, { kind: 'scratch' });
    assert.equal(named(r, /COPY/).name, '[1/1] COPY a /a');
    assert.deepEqual(r.image.config.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
    assert.deepEqual(r.calls, []);
  });

  test('ARG before FROM, --platform with BUILDPLATFORM, and the target platform', async () => {
    const df = 'ARG IMG=alpine\nARG TAG=3.20\nFROM --platform=$BUILDPLATFORM ${IMG}:${TAG} AS b\nFROM $IMG:$TAG\n';
    const r = await build(df, { targetPlatform: ARM64, target: 'b' });
    assert.deepEqual(steps(r)[0]!.op, { kind: 'image', ref: `docker.io/library/alpine:3.20@${digestOf('a')}`, platform: AMD64 });
    const r2 = await build(df, { targetPlatform: ARM64, buildArgs: { TAG: '3.19' } });
    assert.equal(r2.platform.architecture, 'arm64');
    assert.deepEqual(r2.calls, ['docker.io/library/alpine:3.19 linux/arm64']);
  });

  test('FROM an earlier stage inherits its state and config', async () => {
    const r = await build('FROM alpine:3.20 AS base\nENV A=1\nWORKDIR /w\nFROM base\nRUN pwd\n');
    const run = execOf(named(r, /RUN pwd/));
    assert.equal(run.cwd, '/w');
    assert.ok(run.env.includes('A=1'));
    assert.equal(named(r, /RUN pwd/).name, '[stage-1 1/1] RUN pwd');
    assert.equal(r.image.config.WorkingDir, '/w');
  });

  test('a duplicate stage name is a warning; references find the first stage', async () => {
    const r = await build('FROM alpine:3.20 AS a\nRUN first\nFROM alpine:3.20 AS a\nRUN second\nFROM a\n');
    assert.deepEqual(r.warnings, ['Duplicate stage name "a", stage names should be unique (line 3)']);
    assert.ok(steps(r).some((v) => v.name.endsWith('RUN first')));
    assert.ok(!steps(r).some((v) => v.name.endsWith('RUN second')));
  });

  test('COPY/ADD/WORKDIR names show expanded words; RUN keeps quotes and unknown variables', async () => {
    const r = await build('FROM alpine:3.20\nARG V=1\nCOPY "a.txt" /x-$V-$NOPE/\nWORKDIR "/w $NOPE"\nRUN echo "$V" $NOPE\n');
    assert.equal(named(r, /COPY/).name, '[2/4] COPY a.txt /x-1-/');
    assert.equal(named(r, /WORKDIR/).name, '[3/4] WORKDIR /w ');
    assert.equal(named(r, /RUN/).name, '[4/4] RUN echo "1" $NOPE');
  });

  test('EXPOSE accepts ip:host:container specs and upper-case protocols', async () => {
    const r = await build('FROM alpine:3.20\nEXPOSE 80/UDP 1.2.3.4:8080:80 0\n');
    assert.deepEqual(Object.keys(r.image.config.ExposedPorts!).sort(), ['0/tcp', '80/tcp', '80/udp']);
  });

  test('stage names are case-insensitive; invalid names are errors', async () => {
    const r = await build('FROM alpine:3.20 AS Base\nFROM BASE\n');
    assert.equal(r.stages[1]!.base, 'BASE');
    assert.equal(steps(r).length, 1);
    await rejectsAt('FROM alpine AS 1bad\n', 1, /invalid name for build stage/);
    await rejectsAt('FROM alpine AS\n', 1, /FROM requires either one or three arguments/);
    await rejectsAt('ARG X\nFROM $X\n', 2, /base name \(\$X\) should not be blank/);
  });
});

describe('RUN', () => {
  test('shell form uses SHELL; exec form is taken as is', async () => {
    const r = await build('FROM alpine:3.20\nRUN echo "a  b" $HOME\nSHELL ["/bin/bash", "-eo", "pipefail", "-c"]\nRUN echo hi\nRUN ["/bin/echo", "x"]\n');
    assert.deepEqual(execOf(named(r, /2\/4\] RUN echo "a/)).args, ['/bin/sh', '-c', 'echo "a  b" $HOME']);
    assert.deepEqual(execOf(named(r, /RUN echo hi/)).args, ['/bin/bash', '-eo', 'pipefail', '-c', 'echo hi']);
    assert.deepEqual(execOf(named(r, /RUN \["/)).args, ['/bin/echo', 'x']);
    assert.deepEqual(r.image.config.Shell, ['/bin/bash', '-eo', 'pipefail', '-c']);
  });

  test('continuation lines, comments inside, and env/cwd/user of the step', async () => {
    const df = 'FROM node:20\nARG V=1\nENV E=2\nRUN a && \\\n  # inside\n\n  b\n';
    const r = await build(df);
    const v = named(r, /RUN a/);
    const op = execOf(v);
    assert.deepEqual(op.args, ['/bin/sh', '-c', 'a &&   b']);
    assert.deepEqual(op.env, ['PATH=/usr/local/bin:/usr/bin:/bin', 'NODE_VERSION=20.1.0', 'V=1', 'E=2']);
    assert.equal(op.cwd, '/home/node');
    assert.equal(op.user, 'node');
    assert.equal(op.network, 'default');
    assert.deepEqual(v.location, { file: 'Dockerfile', line: 4, endLine: 7 });
  });

  test('a heredoc body becomes the script; a shebang script is run from a file', async () => {
    const df = 'FROM alpine:3.20\nRUN <<EOF\nset -e\necho $HOME\nEOF\nRUN <<-EOT\n\t#!/usr/bin/env python3\n\tprint(1)\n\tEOT\nRUN cat <<A > /a && cat <<B > /b\naaa\nA\nbbb\nB\n';
    const r = await build(df);
    const a = named(r, /2\/4\] RUN <<EOF/);
    assert.equal(a.name, '[2/4] RUN <<EOF (set -e...)');
    assert.deepEqual(execOf(a).args, ['/bin/sh', '-c', 'set -e\necho $HOME\n']);
    const py = execOf(named(r, /RUN <<-EOT/));
    assert.deepEqual(py.args, ['/bin/sh', '-c', '/dev/pipes/EOT']);
    const script = r.graph.vertices[py.mounts[0]!.from!]!;
    assert.deepEqual(fileOf(script).actions, [{ action: 'mkfile', path: '/EOT', mode: 0o755, data: '#!/usr/bin/env python3\nprint(1)\n' }]);
    assert.equal(py.mounts[0]!.target, '/dev/pipes/');
    const multi = execOf(named(r, /RUN cat <<A/));
    assert.deepEqual(multi.args, ['/bin/sh', '-c', 'cat <<A > /a && cat <<B > /b\naaa\nA\nbbb\nB']);
    assert.equal(named(r, /RUN cat/).location?.endLine, 14);
  });

  test('--network modes; an unknown mode is an error', async () => {
    const r = await build('FROM alpine:3.20\nRUN --network=none a\nRUN --network=host b\nRUN --network=default c\n');
    assert.equal(execOf(named(r, /none a/)).network, 'none');
    assert.equal(execOf(named(r, /host b/)).network, 'host');
    assert.equal(execOf(named(r, /default c/)).network, 'default');
    await rejectsAt('FROM alpine:3.20\nRUN --network=bridge a\n', 2, /unsupported network mode: bridge/);
  });

  test('--mount: cache, tmpfs, secret, bind from context / stage / image, with expansion', async () => {
    const df = [
      'FROM alpine:3.20 AS tools',
      'FROM alpine:3.20',
      'ARG CACHE_ID=gomod',
      'WORKDIR /src',
      'RUN --mount=type=cache,id=$CACHE_ID,target=/go/pkg,sharing=locked,mode=0700,uid=1000 \\',
      '    --mount=type=tmpfs,target=scratch,size=64m \\',
      '    --mount=type=secret,id=npmrc,target=/root/.npmrc,required \\',
      '    --mount=type=secret,id=token,env=TOKEN \\',
      '    --mount=type=bind,source=go.mod,target=go.mod \\',
      '    --mount=from=tools,source=/bin,target=/tools,rw \\',
      '    --mount=type=bind,from=busybox:1,target=/bb \\',
      '    make',
      '',
    ].join('\n');
    const r = await build(df);
    const v = named(r, /make$/);
    const m = execOf(v).mounts;
    assert.deepEqual(m[0], { type: 'cache', target: '/go/pkg', id: 'gomod', readonly: false, sharing: 'locked', mode: 0o700, uid: 1000, gid: 0 });
    assert.deepEqual(m[1], { type: 'tmpfs', target: '/src/scratch', readonly: false, size: 64 * 1024 * 1024 });
    assert.deepEqual(m[2], { type: 'secret', target: '/root/.npmrc', id: 'npmrc', readonly: true, required: true, mode: 0o400, uid: 0, gid: 0 });
    assert.equal(m[3]!.env, 'TOKEN');
    assert.equal(m[3]!.id, 'token');
    const ctx = r.graph.vertices[m[4]!.from!]!;
    assert.deepEqual(ctx.op, { kind: 'local', name: 'context', excludes: [] });
    assert.deepEqual({ ...m[4], from: undefined }, { type: 'bind', target: '/src/go.mod', source: '/go.mod', from: undefined, readonly: true });
    assert.equal(r.graph.vertices[m[5]!.from!]!.name, '[tools 1/1] FROM docker.io/library/alpine:3.20@' + digestOf('a'));
    assert.equal(m[5]!.readonly, false);
    assert.deepEqual(r.graph.vertices[m[6]!.from!]!.op, { kind: 'image', ref: `docker.io/library/busybox:1@${digestOf('f')}`, platform: AMD64 });
    for (const x of m) if (x.from) assert.ok(v.inputs.includes(x.from));
    assert.equal(v.inputs[0], execOf(v).rootfs);
  });

  test('--mount errors: ssh is unsupported, bad keys, variables in from=', async () => {
    await rejectsAt('FROM alpine:3.20\nRUN --mount=type=ssh ssh-add -l\n', 2, /type=ssh is not supported/);
    await rejectsAt('FROM alpine:3.20\nRUN --mount=type=bind,target=/x,size=1 a\n', 2, /unexpected key 'size' for mount type 'bind'/);
    await rejectsAt('FROM alpine:3.20\nRUN --mount=type=nfs,target=/x a\n', 2, /unsupported mount type "nfs"/);
    await rejectsAt('FROM alpine:3.20\nRUN --mount=type=secret a\n', 2, /one of source, target required/);
    await rejectsAt('FROM alpine:3.20\nARG S=x\nRUN --mount=from=$S,target=/x a\n', 3, /'from' doesn't support variable expansion/);
    await rejectsAt('FROM alpine:3.20\nRUN --mount=type=bind,target=/x,mode=0755 a\n', 2, /mode not allowed for "bind" type mounts/);
  });

  test('unknown flags are errors', async () => {
    await rejectsAt('FROM alpine:3.20\nRUN --foo=bar a\n', 2, /unknown flag: --foo/);
    await rejectsAt('FROM alpine:3.20\nENV --x=1 a=b\n', 2, /unknown flag: --x/);
  });
});

describe('COPY and ADD', () => {
  test('COPY from the context: dockerignore excludes on the context source, dest relative to WORKDIR', async () => {
    const df = 'FROM alpine:3.20\nWORKDIR /app\nCOPY --chown=1000:1000 --chmod=0644 --link --exclude=*.tmp src/*.go go.mod ./\nCOPY README.md .\nCOPY a.txt sub/b.txt\n';
    const r = await build(df, { excludes: ['.git', '*.md'] });
    const v = named(r, /COPY --chown/);
    const [a] = fileOf(v).actions as CopyAction[];
    assert.deepEqual(r.graph.vertices[a!.from]!.op, { kind: 'local', name: 'context', excludes: ['.git', '*.md'] });
    assert.deepEqual(
      { ...a, from: '' },
      {
        action: 'copy', from: '', src: ['src/*.go', 'go.mod'], dest: '/app/', chown: { user: '1000', group: '1000' }, chmod: '0644',
        link: true, parents: false, followSymlinks: true, excludes: ['*.tmp'], unpack: false, dirContents: true,
        allowWildcard: true, allowEmptyWildcard: true, createDestPath: true,
      },
    );
    assert.equal((fileOf(named(r, /COPY README/)).actions[0] as CopyAction).dest, '/app/');
    assert.equal((fileOf(named(r, /COPY a.txt/)).actions[0] as CopyAction).dest, '/app/sub/b.txt');
    assert.equal(fileOf(v).base, v.inputs[0]);
  });

  test('COPY --from a stage by name and by index, and from an image', async () => {
    const df = 'FROM alpine:3.20 AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /a\nCOPY --from=0 /out /b\nCOPY --from=nginx:1.27 /etc/nginx /c\n';
    const r = await build(df);
    const built = named(r, /RUN make/).id;
    assert.equal((fileOf(named(r, /\/a$/)).actions[0] as CopyAction).from, built);
    assert.equal((fileOf(named(r, /\/b$/)).actions[0] as CopyAction).from, built);
    const img = r.graph.vertices[(fileOf(named(r, /\/c$/)).actions[0] as CopyAction).from]!;
    // Images named by --from are resolved and pinned like FROM images.
    assert.deepEqual(img.op, { kind: 'image', ref: `docker.io/library/nginx:1.27@${digestOf('f')}`, platform: AMD64 });
    assert.ok(r.calls.includes('docker.io/library/nginx:1.27 linux/amd64'));
  });

  test('COPY --parents, heredoc sources, and variables in sources/dest/chown', async () => {
    const df = 'FROM alpine:3.20\nARG DIR=cfg U=app\nENV N=world\nCOPY --parents --chown=$U ${DIR}/a ${DIR}/b /etc/\nCOPY <<EOF <<"RAW" /opt/\nhello $N\nEOF\nraw $N\nRAW\n';
    const r = await build(df);
    const c = fileOf(named(r, /--parents/)).actions[0] as CopyAction;
    assert.deepEqual(c.src, ['cfg/a', 'cfg/b']);
    assert.equal(c.parents, true);
    assert.deepEqual(c.chown, { user: 'app' });
    const h = fileOf(named(r, /COPY <<EOF/)).actions as CopyAction[];
    const files = h.map((a) => fileOf(r.graph.vertices[a.from]!).actions[0]);
    assert.deepEqual(files, [
      { action: 'mkfile', path: '/EOF', mode: 0o644, data: 'hello world\n' },
      { action: 'mkfile', path: '/RAW', mode: 0o644, data: 'raw $N\n' },
    ]);
    assert.deepEqual(h.map((a) => a.src), [['/EOF'], ['/RAW']]);
  });

  test('ADD: local archives unpack, URLs do not; --checksum pins an http source', async () => {
    const sum = 'sha256:' + '1'.repeat(64);
    const df = `FROM alpine:3.20\nADD rootfs.tar.gz /\nADD --unpack=false keep.tar /k/\nADD --checksum=${sum} https://example.com/dl/tool.tgz /opt/\nADD https://example.com/x /x\n`;
    const r = await build(df);
    assert.equal((fileOf(named(r, /rootfs/)).actions[0] as CopyAction).unpack, true);
    assert.equal((fileOf(named(r, /keep.tar/)).actions[0] as CopyAction).unpack, false);
    const u = fileOf(named(r, /tool.tgz/)).actions[0] as CopyAction;
    assert.deepEqual(r.graph.vertices[u.from]!.op, { kind: 'http', url: 'https://example.com/dl/tool.tgz', filename: 'tool.tgz', checksum: sum });
    assert.deepEqual(u.src, ['/tool.tgz']);
    assert.equal(u.unpack, false);
    const x = fileOf(named(r, /ADD https:\/\/example.com\/x/)).actions[0] as CopyAction;
    assert.deepEqual(r.graph.vertices[x.from]!.op, { kind: 'http', url: 'https://example.com/x', filename: 'x' });
  });

  test('COPY/ADD errors', async () => {
    await rejectsAt('FROM alpine:3.20\nCOPY onlyone\n', 2, /requires at least two arguments/);
    await rejectsAt('FROM alpine:3.20\nCOPY https://x/y /y\n', 2, /source can't be a URL for COPY/);
    await rejectsAt('FROM alpine:3.20\nADD --checksum=sha256:abcd local.txt /\n', 2, /checksum requires HTTP\(S\) or Git sources/);
    await rejectsAt('FROM alpine:3.20\nCOPY --chmod=999 a /\n', 2, /invalid chmod parameter/);
    await rejectsAt('FROM alpine:3.20 AS first\nCOPY --from=later a /\nFROM alpine:3.20 AS later\n', 2, /cannot copy from stage "later"/, { target: 'first' });
    await rejectsAt('FROM alpine:3.20\nARG S=x\nCOPY --from=$S a /\n', 3, /variable expansion is not supported for --from/);
    await rejectsAt('FROM alpine:3.20\nCOPY --from=7 a /\n', 2, /invalid stage index 7/);
    await rejectsAt('FROM alpine:3.20\nADD git@github.com:a/b.git /src\n', 2, /git repository is not supported/);
    await rejectsAt('FROM alpine:3.20\nCOPY --parents=maybe a /\n', 2, /expecting boolean value for flag parents/);
    await rejectsAt('FROM alpine:3.20\nADD --from=x a /\n', 2, /unknown flag: --from/);
  });
});

describe('image config instructions', () => {
  test('ENV, LABEL, USER, WORKDIR, EXPOSE, VOLUME, STOPSIGNAL, MAINTAINER, CMD, HEALTHCHECK', async () => {
    const df = [
      'FROM alpine:3.20',
      'MAINTAINER Jane <jane@example.com>',
      'ENV A=1 B="two words" C=${A}x',
      'ENV LEGACY value with spaces',
      'LABEL org.opencontainers.image.title="My App" "quoted key"=v',
      'USER 1000:1000',
      'WORKDIR /srv',
      'WORKDIR app',
      'EXPOSE 80 443/tcp 53/udp 8000-8001',
      'VOLUME /data ["/logs"]',
      'VOLUME ["/cache", "/tmp"]',
      'STOPSIGNAL SIGTERM',
      'HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --retries=3 CMD curl -f http://localhost/',
      'CMD ["serve", "--port", "80"]',
      '',
    ].join('\n');
    const r = await build(df);
    const c = r.image.config;
    assert.equal(r.image.author, 'Jane <jane@example.com>');
    assert.deepEqual(c.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1', 'B=two words', 'C=x', 'LEGACY=value with spaces']);
    assert.deepEqual(c.Labels, { 'org.opencontainers.image.title': 'My App', 'quoted key': 'v' });
    assert.equal(c.User, '1000:1000');
    assert.equal(c.WorkingDir, '/srv/app');
    assert.deepEqual(Object.keys(c.ExposedPorts!).sort(), ['443/tcp', '53/udp', '80/tcp', '8000/tcp', '8001/tcp']);
    assert.deepEqual(Object.keys(c.Volumes!).sort(), ['/cache', '/data', '/tmp', '[/logs]']);
    assert.equal(c.StopSignal, 'SIGTERM');
    assert.deepEqual(c.Healthcheck, {
      Test: ['CMD-SHELL', 'curl -f http://localhost/'],
      Interval: 30e9,
      Timeout: 3e9,
      StartPeriod: 60e9,
      Retries: 3,
    });
    assert.deepEqual(c.Cmd, ['serve', '--port', '80']);
    // WORKDIR creates the directory (as the current user) and is a step; metadata-only instructions are not.
    const wd = fileOf(named(r, /WORKDIR app/));
    assert.deepEqual(wd.actions, [{ action: 'mkdir', path: '/srv/app', mode: 0o755, parents: true, chown: { user: '1000', group: '1000' } }]);
    assert.equal(named(r, /WORKDIR \/srv/).name, '[2/3] WORKDIR /srv');
    assert.ok(r.image.history.some((h) => h.created_by === 'ENV A=1 B=two words C=x' && h.empty_layer));
  });

  test('ENTRYPOINT shell form wraps in SHELL and clears the base CMD; a later CMD stays', async () => {
    const r1 = await build('FROM node:20\nENTRYPOINT exec node server.js\n');
    assert.deepEqual(r1.image.config.Entrypoint, ['/bin/sh', '-c', 'exec node server.js']);
    assert.equal(r1.image.config.Cmd, undefined);
    const r2 = await build('FROM node:20\nCMD ["x"]\nENTRYPOINT ["y"]\n');
    assert.deepEqual(r2.image.config.Cmd, ['x']);
    assert.deepEqual(r2.image.config.Entrypoint, ['y']);
    const r3 = await build('FROM node:20\nCMD echo $HOME\n');
    assert.deepEqual(r3.image.config.Cmd, ['/bin/sh', '-c', 'echo $HOME']);
  });

  test('HEALTHCHECK NONE and exec form; bad values are errors', async () => {
    assert.deepEqual((await build('FROM alpine:3.20\nHEALTHCHECK NONE\n')).image.config.Healthcheck, { Test: ['NONE'] });
    assert.deepEqual((await build('FROM alpine:3.20\nHEALTHCHECK CMD ["true"]\n')).image.config.Healthcheck, { Test: ['CMD', 'true'] });
    await rejectsAt('FROM alpine:3.20\nHEALTHCHECK --interval=5 CMD x\n', 2, /missing unit in duration/);
    await rejectsAt('FROM alpine:3.20\nHEALTHCHECK --retries=-1 CMD x\n', 2, /--retries cannot be negative/);
    await rejectsAt('FROM alpine:3.20\nHEALTHCHECK WAT x\n', 2, /Unknown type "WAT" in HEALTHCHECK/);
  });

  test('ONBUILD is recorded; base image triggers run first and are not inherited', async () => {
    const r = await build('FROM alpine:3.20\nONBUILD RUN echo hi\nONBUILD COPY . /src\n');
    assert.deepEqual(r.image.config.OnBuild, ['RUN echo hi', 'COPY . /src']);
    await rejectsAt('FROM alpine:3.20\nONBUILD ONBUILD RUN x\n', 2, /Chaining ONBUILD/);
    await rejectsAt('FROM alpine:3.20\nONBUILD FROM x\n', 2, /FROM isn't allowed as an ONBUILD trigger/);

    const t = await build('FROM onbuild-base:1\nRUN ls\n');
    const names = steps(t).map((v) => v.name);
    assert.deepEqual(names.filter((n) => /^\[\d/.test(n)), [
      `[1/4] FROM docker.io/library/onbuild-base:1@${digestOf('c')}`,
      '[2/4] ONBUILD COPY . /app/',
      '[3/4] ONBUILD RUN make -C /app',
      '[4/4] RUN ls',
    ]);
    assert.equal(named(t, /ONBUILD RUN/).location?.line, 1);
    assert.equal(t.image.config.OnBuild, undefined);
  });

  test('ONBUILD of an earlier stage fires in the stage built on it; ARG values carry over', async () => {
    const r = await build('FROM alpine:3.20 AS base\nARG V=7\nONBUILD RUN echo built on base\nFROM base\nRUN echo $V\n');
    const names = steps(r).map((v) => v.name);
    assert.deepEqual(names.slice(1), ['[stage-1 1/2] ONBUILD RUN echo built on base', '[stage-1 2/2] RUN echo 7']);
    assert.ok(execOf(named(r, /RUN echo 7/)).env.includes('V=7'));
    assert.equal(r.image.config.OnBuild, undefined);
    const base = await build('FROM alpine:3.20 AS base\nONBUILD RUN echo x\nFROM base\n', { target: 'base' });
    assert.deepEqual(base.image.config.OnBuild, ['RUN echo x']);
  });

  test('--label values land on the final image', async () => {
    const r = await build('FROM alpine:3.20\nLABEL a=1 b=2\n', { labels: { b: 'cli', c: '3' } });
    assert.deepEqual(r.image.config.Labels, { a: '1', b: 'cli', c: '3' });
  });

  test('SHELL must be JSON', async () => {
    await rejectsAt('FROM alpine:3.20\nSHELL /bin/bash -c\n', 2, /SHELL requires the arguments to be in JSON form/);
  });
});

describe('ARG and expansion scope', () => {
  test('defaults, --build-arg overrides, redeclared globals, ENV/ARG order, automatic platform args', async () => {
    const df = [
      'ARG GLOBAL=g',
      'FROM alpine:3.20',
      'RUN echo [$GLOBAL]',
      'ARG GLOBAL',
      'ARG LOCAL=l-${GLOBAL}',
      'ARG FROMCLI=default',
      'ARG TARGETARCH',
      'ENV LOCAL=env-wins',
      'RUN echo $GLOBAL $LOCAL $FROMCLI $TARGETARCH $BUILDARCH',
      '',
    ].join('\n');
    const r = await build(df, { buildArgs: { FROMCLI: 'cli', NOTDECLARED: 'x' }, targetPlatform: ARM64 });
    const first = execOf(named(r, /RUN echo \[/));
    assert.ok(!first.env.some((e) => e.startsWith('GLOBAL=')), 'a global ARG is not visible until redeclared');
    const second = named(r, /RUN echo g/);
    assert.ok(execOf(second).env.includes('GLOBAL=g'));
    assert.ok(execOf(second).env.includes('LOCAL=env-wins'));
    assert.ok(execOf(second).env.includes('FROMCLI=cli'));
    assert.ok(execOf(second).env.includes('TARGETARCH=arm64'));
    // The display name fills in known variables; BUILDARCH was never declared in the stage.
    assert.equal(second.name, '[3/3] RUN echo g env-wins cli arm64 $BUILDARCH');
    assert.deepEqual(r.warnings, ['build argument NOTDECLARED was not consumed']);
    assert.ok(!r.image.config.Env!.some((e) => e.startsWith('FROMCLI')), 'ARG values never reach the image config');
  });

  test('expansion applies to the right instructions only', async () => {
    const df = 'FROM alpine:3.20\nARG X=val\nWORKDIR /w/$X\nUSER $X\nLABEL l=$X\nSTOPSIGNAL ${SIG:-SIGINT}\nVOLUME /v/$X\nCMD echo $X\nENTRYPOINT ["$X"]\nONBUILD RUN echo $X\n';
    const c = (await build(df)).image.config;
    assert.equal(c.WorkingDir, '/w/val');
    assert.equal(c.User, 'val');
    assert.deepEqual(c.Labels, { l: 'val' });
    assert.equal(c.StopSignal, 'SIGINT');
    assert.deepEqual(Object.keys(c.Volumes!), ['/v/val']);
    assert.deepEqual(c.Cmd, ['/bin/sh', '-c', 'echo $X']);
    assert.deepEqual(c.Entrypoint, ['$X']);
    assert.deepEqual(c.OnBuild, ['RUN echo $X']);
  });

  test('an expansion error names the line', async () => {
    await rejectsAt('FROM alpine:3.20\n\nENV A=${REQUIRED:?required}\n', 3, /REQUIRED: required/);
    // Words split before expansion, as BuildKit's parser does: spaces inside ${} need quotes.
    await rejectsAt('FROM alpine:3.20\nENV A=${REQUIRED:?must be set}\n', 2, /can't find = in "be"/);
    await rejectsAt('FROM alpine:3.20\nENV A="${REQUIRED:?must be set}"\n', 2, /REQUIRED: must be set/);
    await rejectsAt('FROM alpine:3.20\nLABEL a="unterminated\n', 2, /matching double-quote/);
  });

  test('# escape=` directive', async () => {
    const r = await build('# escape=`\nFROM alpine:3.20\nRUN echo a `\n    b\nENV P=C:\\dir\n');
    assert.deepEqual(execOf(named(r, /RUN/)).args, ['/bin/sh', '-c', 'echo a     b']);
    assert.ok(r.image.config.Env!.includes('P=C:\\dir'));
  });
});

describe('multi-stage, targets and pruning', () => {
  const df = readFileSync(fixtures + 'multistage.Dockerfile', 'utf8');

  test('default target is the last stage; unused stages are neither resolved nor in the graph', async () => {
    const r = await build(df);
    assert.equal(r.targetStage, 'release');
    assert.deepEqual(r.calls.sort(), ['docker.io/library/golang:1.22-alpine linux/amd64', 'gcr.io/distroless/static:nonroot linux/amd64']);
    const names = Object.values(r.graph.vertices).map((v) => v.name);
    assert.ok(!names.some((n) => n.includes('mkdocs')));
    assert.deepEqual(r.stages.map((s) => [s.name, s.used]), [['base', true], ['deps', true], ['build', true], ['docs', false], ['release', true]]);
    assert.equal(r.image.config.User, 'nonroot');
    assert.deepEqual(r.image.config.Entrypoint, ['/app']);
    const build2 = named(r, /go build/);
    assert.equal(build2.name.split('] ')[0], '[build 1/1');
    assert.deepEqual(execOf(build2).mounts.map((m) => m.type), ['secret', 'bind']);
    assert.equal(execOf(build2).mounts[1]!.target, '/src');
  });

  test('--target selects a stage; only its dependencies are built', async () => {
    const r = await build(df, { target: 'docs' });
    assert.deepEqual(r.calls, ['docker.io/library/alpine:3.20 linux/amd64']);
    assert.equal(steps(r).length, 2);
    assert.equal(steps(r)[1]!.name, '[docs 2/2] RUN apk add --no-cache mkdocs');
    await assert.rejects(build(df, { target: 'nope' }), /target stage "nope" could not be found/);
  });

  test('the same Dockerfile gives the same vertex ids; a changed late step keeps earlier ids', async () => {
    const a = await build(df);
    const b = await build(df);
    assert.equal(a.target, b.target);
    const c = await build(df.replace('USER nonroot', 'USER root'));
    assert.equal(named(c, /COPY --from=build/).id, named(a, /COPY --from=build/).id);
  });

  test('noCache for listed stages marks their vertices', async () => {
    const r = await build(df, { noCache: ['build'] });
    assert.equal(named(r, /go build/).ignoreCache, true);
    assert.equal(named(r, /go mod download/).ignoreCache, undefined);
  });

  test('step numbers are padded to the width of the total', async () => {
    const lines = ['FROM alpine:3.20'];
    for (let i = 0; i < 10; i++) lines.push(`RUN step${i}`);
    const r = await build(lines.join('\n') + '\n');
    assert.equal(named(r, /step0/).name, '[ 2/11] RUN step0');
    assert.equal(named(r, /step9/).name, '[11/11] RUN step9');
  });
});

describe('parse errors carry file:line', () => {
  test('unknown instruction', () => rejectsAt('FROM alpine:3.20\n\nFROOM x\n', 3, /unknown instruction: FROOM/));
  test('instruction before FROM', () => rejectsAt('# c\nRUN x\nFROM alpine\n', 2, /no build stage in current context/));
  test('unterminated heredoc', () => rejectsAt('FROM alpine:3.20\nRUN <<EOF\necho\n', 2, /unterminated heredoc/));
  test('bad EXPOSE', async () => {
    await rejectsAt('FROM alpine:3.20\nEXPOSE 80/xyz\n', 2, /invalid port: "80\/xyz": invalid proto: xyz/);
    await rejectsAt('FROM alpine:3.20\nEXPOSE 90-80\n', 2, /invalid containerPort: 90-80/);
    await rejectsAt('FROM alpine:3.20\nEXPOSE 70000\n', 2, /invalid containerPort: 70000/);
  });
  test('bad STOPSIGNAL', () => rejectsAt('FROM alpine:3.20\nSTOPSIGNAL FOO\n', 2, /invalid signal: FOO/));
  test('bad STOPSIGNAL arity', () => rejectsAt('FROM alpine:3.20\nSTOPSIGNAL A B\n', 2, /STOPSIGNAL requires exactly one argument/));
  test('empty file', () => assert.rejects(build('# only a comment\n'), /file with no instructions/));
  test('resolver failures name the FROM line and the reference', async () => {
    await assert.rejects(
      convertDockerfile({
        dockerfile: 'FROM alpine:3.20\nFROM nosuch/image:1\n',
        resolveImageConfig: async (ref) => {
          if (ref.includes('nosuch')) throw new Error('not found');
          return { config: {} };
        },
      }),
      (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.context.line, 2);
        assert.equal(err.context.ref, 'docker.io/nosuch/image:1');
        assert.match(err.message, /failed to resolve source metadata for docker.io\/nosuch\/image:1: not found/);
        return true;
      },
    );
  });
});
