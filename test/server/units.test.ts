// Pure pieces of the server: address syntax, gRPC framing, Go file modes, config validation, exporter and
// frontend normalisation, progress replay.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatAddress, grpcBindTarget, parseAddress } from '../../src/server/address.js';
import { FrameDecoder, frameMessage } from '../../src/server/grpc-frames.js';
import { GO_MODE_DIR, GO_MODE_SETUID, GO_MODE_SYMLINK, goModeKind, goModeToPosixPerm, posixToGoMode } from '../../src/server/file-mode.js';
import { parseServeConfig } from '../../src/server/config.js';
import { normalizeExporters, resolveFrontend } from '../../src/server/control.js';
import { fileSyncMetadata } from '../../src/server/filesync-receive.js';
import { JobProgress } from '../../src/server/progress.js';
import { solverProgress } from '../../src/server/solver-progress.js';
import { RemoteBuildSession } from '../../src/server/build-session.js';
import { SessionRegistry } from '../../src/server/sessions.js';
import { SolveRequest } from '../../src/server/gen/buildkit/control.js';
import type { StatusResponse } from '../../src/server/gen/buildkit/control.js';

describe('addresses', () => {
  test('tcp and unix forms', () => {
    assert.deepEqual(parseAddress('tcp://0.0.0.0:1234'), { kind: 'tcp', host: '0.0.0.0', port: 1234 });
    assert.deepEqual(parseAddress('tcp://[::1]:80'), { kind: 'tcp', host: '::1', port: 80 });
    assert.deepEqual(parseAddress('unix:///run/obdkit/obdkit.sock'), { kind: 'unix', path: '/run/obdkit/obdkit.sock' });
    assert.equal(grpcBindTarget(parseAddress('tcp://[::1]:80')), '[::1]:80');
    assert.equal(formatAddress({ kind: 'tcp', host: '127.0.0.1', port: 5 }), 'tcp://127.0.0.1:5');
    assert.throws(() => parseAddress('http://x:1'), /unsupported address/);
    assert.throws(() => parseAddress('unix://relative.sock'), /absolute/);
    assert.throws(() => parseAddress('tcp://host'), /HOST:PORT/);
  });
});

describe('gRPC framing', () => {
  test('messages survive arbitrary chunking', () => {
    const msgs = [Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.from('tail')];
    const wire = Buffer.concat(msgs.map(frameMessage));
    for (const step of [1, 3, 5, 4096, wire.length]) {
      const d = new FrameDecoder('test');
      const out: Buffer[] = [];
      for (let i = 0; i < wire.length; i += step) out.push(...d.push(wire.subarray(i, i + step)));
      assert.deepEqual(out, msgs);
      assert.equal(d.hasPartial, false);
    }
  });

  test('compressed frames are refused with context', () => {
    const d = new FrameDecoder('/x/Y');
    assert.throws(() => d.push(Buffer.from([1, 0, 0, 0, 0])), /compressed.*\/x\/Y|\/x\/Y.*compressed/);
  });
});

describe('Go file modes', () => {
  test('round trip with POSIX modes', () => {
    assert.equal(posixToGoMode(0o040755), (GO_MODE_DIR | 0o755) >>> 0);
    assert.equal(posixToGoMode(0o120777), (GO_MODE_SYMLINK | 0o777) >>> 0);
    assert.equal(posixToGoMode(0o104755), (GO_MODE_SETUID | 0o755) >>> 0);
    assert.equal(goModeToPosixPerm(posixToGoMode(0o106755)), 0o6755);
    assert.equal(goModeKind(posixToGoMode(0o100644)), 'file');
    assert.equal(goModeKind(posixToGoMode(0o020666)), 'chardevice');
    assert.equal(goModeKind(posixToGoMode(0o010644)), 'fifo');
  });
});

describe('config', () => {
  test('parses the documented keys', () => {
    const c = parseServeConfig(
      [
        'root = "/var/lib/obdkit"',
        '[registry."docker.io"]',
        'mirrors = ["mirror.example.com"]',
        '[worker]',
        'device = "tcmu"',
        'max-parallelism = 4',
        'platforms = ["linux/amd64", "linux/amd64/v2"]',
        '[[worker.gcpolicy]]',
        'all = true',
        'keep-duration = "1h30m"',
        'max-used-space = "512MiB"',
      ].join('\n'),
    );
    assert.equal(c.root, '/var/lib/obdkit');
    assert.deepEqual(c.registries['docker.io']?.mirrors, ['mirror.example.com']);
    assert.equal(c.worker.device, 'tcmu');
    assert.equal(c.worker.maxParallelism, 4);
    assert.equal(c.worker.gcPolicy[0]?.keepDurationNs, 5400n * 1_000_000_000n);
    assert.equal(c.worker.gcPolicy[0]?.maxUsedSpace, 512n * 1024n * 1024n);
  });

  test('mistakes name the file and key', () => {
    assert.throws(() => parseServeConfig('[worker]\ndevice = "nbd"\n', 'obdkit.toml'), /obdkit\.toml.*worker\.device/);
    assert.throws(() => parseServeConfig('[registry."r"]\nhttps = true\n', 'c.toml'), /registry\."r"\.https.*unknown key/);
    assert.throws(() => parseServeConfig('root = \n', 'bad.toml'), /bad\.toml/);
  });
});

describe('request normalisation', () => {
  test('Exporters wins over the duplicated legacy fields', () => {
    const both = SolveRequest.fromPartial({
      Exporters: [{ Type: 'image', Attrs: { name: 'a' } }, { Type: 'local', Attrs: {} }],
      ExporterDeprecated: 'image',
      ExporterAttrsDeprecated: { name: 'a' },
    });
    assert.deepEqual(normalizeExporters(both), [
      { type: 'image', attrs: { name: 'a' }, index: 0 },
      { type: 'local', attrs: {}, index: 1 },
    ]);
    const legacy = SolveRequest.fromPartial({ ExporterDeprecated: 'tar', ExporterAttrsDeprecated: { dest: 'x' } });
    assert.deepEqual(normalizeExporters(legacy), [{ type: 'tar', attrs: { dest: 'x' }, index: 0 }]);
    assert.deepEqual(normalizeExporters(SolveRequest.fromPartial({})), []);
  });

  test('frontends: dockerfile.v0, the upstream Dockerfile image, nothing else', () => {
    assert.equal(resolveFrontend('dockerfile.v0', {}), 'dockerfile.v0');
    assert.equal(resolveFrontend('gateway.v0', { source: 'docker/dockerfile:1' }), 'dockerfile.v0');
    assert.equal(resolveFrontend('gateway.v0', { source: 'docker.io/docker/dockerfile-upstream:master' }), 'dockerfile.v0');
    assert.throws(() => resolveFrontend('gateway.v0', { source: 'example.com/my/frontend:1' }), /cannot be run/);
    assert.throws(() => resolveFrontend('llb.v9', {}), /not supported/);
  });

  test('FileSync headers: one value per pattern, non-ASCII escaped', () => {
    assert.deepEqual(fileSyncMetadata({ dirName: 'context', excludePatterns: ['node_modules', '*.log'] }), {
      'dir-name': ['context'],
      'exclude-patterns': ['node_modules', '*.log'],
    });
    assert.deepEqual(fileSyncMetadata({ dirName: 'ctx', followPaths: ['naïve file'] }), {
      'dir-name': ['ctx'],
      followpaths: ['na%C3%AFve+file'],
      'followpaths-encoded': '1',
    });
  });
});

describe('progress', () => {
  test('late subscribers get the whole history, then the end', () => {
    const p = new JobProgress('ref1');
    const v = p.vertex('[1/2] RUN make');
    v.log('compiling\n');
    v.status('step', 1, 2);
    v.complete();
    const early: (StatusResponse | null)[] = [];
    p.subscribe((u) => early.push(u));
    p.vertex('[2/2] COPY');
    p.end('interrupted');
    const late: (StatusResponse | null)[] = [];
    p.subscribe((u) => late.push(u));
    assert.deepEqual(late, early);
    assert.equal(late.at(-1), null);
    const vertexUpdates = late.flatMap((u) => u?.vertexes ?? []);
    assert.equal(vertexUpdates.filter((x) => x.name === '[1/2] RUN make' && x.completed).length, 1);
    const closed = vertexUpdates.filter((x) => x.name === '[2/2] COPY' && x.completed);
    assert.equal(closed[0]?.error, 'interrupted');
    // Every update of a vertex carries the whole record.
    assert.ok(vertexUpdates.every((x) => x.name !== '' && x.started instanceof Date));
  });
});

describe('session services', () => {
  test('SSH forwarding fails with a clear message', async () => {
    const s = new RemoteBuildSession('sid', new SessionRegistry(), new AbortController().signal);
    await assert.rejects(s.forwardSsh(), /SSH agent forwarding .* is not supported by obdkit/);
  });

  test('waiting for a session stops when the build is cancelled', async () => {
    const ac = new AbortController();
    const s = new RemoteBuildSession('never-opened', new SessionRegistry(), ac.signal);
    const pending = s.getSecret('x');
    ac.abort(new Error('build cancelled by the client'));
    await assert.rejects(pending, /build cancelled by the client/);
  });
});

describe('solver progress', () => {
  test('solver events become Status vertexes keyed by vertex id', () => {
    const p = new JobProgress('ref2');
    const feed = solverProgress(p);
    const base = { inputs: [] as string[], key: 'k', time: new Date() };
    feed({ ...base, type: 'started', vertex: 'v1', name: '[1/2] FROM scratch' });
    feed({ ...base, type: 'cached', vertex: 'v1', name: '[1/2] FROM scratch' });
    feed({ ...base, type: 'started', vertex: 'v2', name: '[2/2] RUN false', inputs: ['v1'] });
    feed({ ...base, type: 'log', vertex: 'v2', name: '[2/2] RUN false', stream: 2, data: Buffer.from('boom\n') });
    feed({ ...base, type: 'error', vertex: 'v2', name: '[2/2] RUN false', error: 'exit code: 1' });
    const all: StatusResponse[] = [];
    p.subscribe((u) => u && all.push(u));
    const v = all.flatMap((u) => u.vertexes);
    assert.deepEqual(
      v.filter((x) => x.completed).map((x) => [x.digest, x.cached, x.error, x.inputs]),
      [
        ['v1', true, '', []],
        ['v2', false, 'exit code: 1', ['v1']],
      ],
    );
    const logs = all.flatMap((u) => u.logs);
    assert.equal(logs[0]?.vertex, 'v2');
    assert.equal(logs[0]?.stream, 2n);
    assert.equal(Buffer.from(logs[0]!.msg).toString(), 'boom\n');
  });
});
