// Listen addresses and transport security with the real buildctl: unix sockets, TLS with client
// certificates, plus the Health service and the `obdkit serve` command wiring.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { Command } from 'commander';
import { execa } from 'execa';
import { log } from '../../src/util/log.js';
import { startServer } from '../../src/server/server.js';
import { HealthClient, HealthCheckResponse_ServingStatus } from '../../src/server/gen/grpc/health/v1/health.js';
import { LLBBridgeClient } from '../../src/server/gen/buildkit/gateway.js';
import { registerServeCommand, resolveServeOptions, type ServeOptions } from '../../src/cli/serve.js';
import { ContextFetchBackend } from './context-fetch-backend.js';
import { assertPeerClients, buildctlBin, run } from './peer-clients.js';

log.level = 'warn';

let tmp: string;

before(async () => {
  assertPeerClients();
  tmp = await mkdtemp(join(tmpdir(), 'obdkit-transport-'));
});

after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function openssl(args: string[]): Promise<void> {
  await execa('openssl', args, { cwd: tmp, stdin: 'ignore' });
}

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate. */
async function makeCerts(): Promise<void> {
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=obdkit test CA']);
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'],
    ['client', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    await writeFile(join(tmp, `${name}.ext`), ext);
    await openssl(['req', ...key, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  }
}

describe('transports', () => {
  test('unix socket and TCP serve the same daemon', async () => {
    const sock = join(tmp, 'run/obdkit.sock');
    const server = await startServer({
      addresses: [`unix://${sock}`, 'tcp://127.0.0.1:0'],
      backend: new ContextFetchBackend({ workDir: join(tmp, 'w-unix') }),
    });
    try {
      assert.equal(server.addresses[0], `unix://${sock}`);
      for (const addr of server.addresses) {
        const r = await run(buildctlBin, ['--addr', addr, 'debug', 'workers']);
        assert.equal(r.exitCode, 0, r.stderr);
        assert.match(r.stdout, /linux\/amd64/);
      }
    } finally {
      await server.close();
    }
  });

  test('TLS with client certificates: accepted with a cert, refused without', async () => {
    await makeCerts();
    const server = await startServer({
      addresses: ['tcp://127.0.0.1:0'],
      backend: new ContextFetchBackend({ workDir: join(tmp, 'w-tls') }),
      tls: { cert: join(tmp, 'server.pem'), key: join(tmp, 'server.key'), ca: join(tmp, 'ca.pem') },
    });
    try {
      const addr = server.addresses[0]!;
      const ok = await run(buildctlBin, [
        '--addr',
        addr,
        '--tlscacert',
        join(tmp, 'ca.pem'),
        '--tlscert',
        join(tmp, 'client.pem'),
        '--tlskey',
        join(tmp, 'client.key'),
        'debug',
        'workers',
      ]);
      assert.equal(ok.exitCode, 0, ok.stderr);
      assert.match(ok.stdout, /linux\/amd64/);
      const noCert = await run(buildctlBin, ['--addr', addr, '--tlscacert', join(tmp, 'ca.pem'), '--timeout', '5', 'debug', 'workers']);
      assert.notEqual(noCert.exitCode, 0);
      const plain = await run(buildctlBin, ['--addr', addr, '--timeout', '5', 'debug', 'workers']);
      assert.notEqual(plain.exitCode, 0);
    } finally {
      await server.close();
    }
  });

  test('health check answers SERVING; gateway calls need a build id', async () => {
    const server = await startServer({ addresses: ['tcp://127.0.0.1:0'], backend: new ContextFetchBackend({ workDir: join(tmp, 'w-health') }) });
    const target = server.addresses[0]!.slice('tcp://'.length);
    const health = new HealthClient(target, credentials.createInsecure());
    const bridge = new LLBBridgeClient(target, credentials.createInsecure());
    try {
      const res = await new Promise<{ status: number }>((resolve, reject) =>
        health.check({ service: '' }, (err, r) => (err ? reject(err) : resolve(r))),
      );
      assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING);
      const err = await new Promise<Error & { code?: number; details?: string }>((resolve) =>
        bridge.ping({}, (e) => resolve(e ?? new Error('ping without a build id succeeded'))),
      );
      assert.equal(err.code, 3);
      assert.match(err.details ?? '', /buildkit-controlapi-buildid/);
    } finally {
      health.close();
      bridge.close();
      await server.close();
    }
  });
});

describe('obdkit serve command', () => {
  test('flags override the config file; the command serves until SIGTERM', async () => {
    const cfgFile = join(tmp, 'obdkit.toml');
    await writeFile(
      cfgFile,
      [
        `root = "${join(tmp, 'state-from-config')}"`,
        'addresses = ["tcp://127.0.0.1:1"]',
        '[registry."127.0.0.1:5000"]',
        'http = true',
        'insecure = true',
        '[worker]',
        'labels = { rack = "r1" }',
        '[[worker.gcpolicy]]',
        'keep-duration = "48h"',
        'reserved-space = "10GB"',
      ].join('\n'),
    );
    const sock = join(tmp, 'serve/obdkit.sock');
    const resolved = await resolveServeOptions({ config: cfgFile, addr: [`unix://${sock}`] });
    assert.deepEqual(resolved.addresses, [`unix://${sock}`]);
    assert.equal(resolved.root, join(tmp, 'state-from-config'));
    assert.equal(resolved.config.registries['127.0.0.1:5000']?.http, true);
    assert.equal(resolved.config.worker.gcPolicy[0]?.keepDurationNs, 48n * 3600n * 1_000_000_000n);
    assert.equal(resolved.config.worker.gcPolicy[0]?.reservedSpace, 10_000_000_000n);

    let seen: ServeOptions | undefined;
    const program = new Command().exitOverride();
    registerServeCommand(program, (opts) => {
      seen = opts;
      return new ContextFetchBackend({ workDir: join(tmp, 'w-serve') });
    });
    const running = program.parseAsync(['node', 'obdkit', 'serve', '--config', cfgFile, '--addr', `unix://${sock}`, '--root', join(tmp, 'state')]);
    try {
      let r = await run(buildctlBin, ['--addr', `unix://${sock}`, 'debug', 'workers', '--verbose']);
      for (let i = 0; i < 100 && r.exitCode !== 0; i++) {
        await new Promise((res) => setTimeout(res, 100));
        r = await run(buildctlBin, ['--addr', `unix://${sock}`, 'debug', 'workers', '--verbose']);
      }
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /rack:\s+r1/);
      assert.equal(seen?.root, join(tmp, 'state'));
    } finally {
      process.emit('SIGTERM', 'SIGTERM');
      await running;
    }
  });
});
