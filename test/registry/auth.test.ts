// Authentication against real registries: htpasswd Basic, bearer tokens from an in-process token
// server (cached per scope, refreshed after a 401), TLS with a private CA, and the wording of
// 401/403/404 errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from "node:http";
import type { AddressInfo } from 'node:net';
import { RegistryClient } from '../../src/registry/client.js';
import { dockerConfigProvider } from '../../src/registry/credentials.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource } from '../../src/registry/upload.js';
import { getManifest, resolveImage } from '../../src/registry/pull.js';
import { pushImage } from '../../src/registry/push.js';
import { ObdkitError } from '../../src/util/errors.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { makeImage, type TestImage } from './fixtures.js';

function blobsOf(img: TestImage) {
  return [img.config, ...img.layers].map((b) => ({ descriptor: b.descriptor, source: bufferSource(b.data) }));
}

describe('Basic auth (htpasswd)', () => {
  let reg: RunningRegistry;
  let work: string;
  before(async () => {
    reg = await startRegistry({ auth: 'basic', users: { alice: 'wonder land' } });
    work = await mkdtemp(join(tmpdir(), 'obdkit-auth-'));
  });
  after(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('credentials from a caller-supplied provider push and pull', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: (host) => (host === reg.host ? { username: 'alice', password: 'wonder land' } : undefined) });
    try {
      const img = makeImage([100]);
      const ref = parseReference(`${reg.host}/basic/app:1`);
      const { digest } = await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      assert.equal((await resolveImage(client, ref)).manifestDigest, digest);
    } finally {
      await client.close();
    }
  });

  test('credentials from a docker config.json (base64 auth)', async () => {
    const cfg = join(work, 'config.json');
    await writeFile(cfg, JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from('alice:wonder land').toString('base64') } } }));
    const client = new RegistryClient({ dockerConfig: cfg });
    try {
      const img = makeImage([200]);
      const ref = parseReference(`${reg.host}/basic/cfg:1`);
      await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      assert.ok((await getManifest(client, ref)).bytes.equals(img.manifest));
    } finally {
      await client.close();
    }
  });

  test('credentials from a docker credential helper (credHelpers)', async () => {
    const bin = join(work, 'bin');
    await mkdir(bin, { recursive: true });
    const helper = join(bin, 'docker-credential-obdtest');
    await writeFile(
      helper,
      `#!/bin/sh\nread host\nif [ "$1" = get ] && [ "$host" = "${reg.host}" ]; then echo '{"ServerURL":"'$host'","Username":"alice","Secret":"wonder land"}'; else echo "credentials not found in native keychain"; exit 1; fi\n`,
    );
    await chmod(helper, 0o755);
    const cfg = join(work, 'helper-config.json');
    await writeFile(cfg, JSON.stringify({ credHelpers: { [reg.host]: 'obdtest' }, auths: { [reg.host]: { auth: Buffer.from('alice:wrong').toString('base64') } } }));
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath ?? ''}`;
    const client = new RegistryClient({ dockerConfig: cfg });
    try {
      const img = makeImage([300]);
      const ref = parseReference(`${reg.host}/basic/helper:1`);
      await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      assert.ok((await getManifest(client, ref)).bytes.equals(img.manifest));
      // A host the helper does not know falls back to the static entries (none here).
      assert.equal(await dockerConfigProvider(cfg)('other.example.com'), undefined);
    } finally {
      process.env.PATH = oldPath;
      await client.close();
    }
  });

  test('401 without credentials names the reference and says to log in', async () => {
    const client = new RegistryClient({ dockerConfig: false });
    try {
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/basic/app:1`)), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.code, 'EREG_AUTH');
        assert.match(err.message, new RegExp(`${reg.host}/basic/app:1`));
        assert.match(err.message, new RegExp(`docker login ${reg.host}`));
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test('wrong password is a 401 with the same advice', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'alice', password: 'nope' }) });
    try {
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/basic/app:1`)), /EREG_AUTH|docker login/);
    } finally {
      await client.close();
    }
  });
});

describe('Bearer token auth', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({
      auth: 'token',
      users: { bob: 'builder', reader: 'r' },
      policy: (user, _repo, actions) => (user === 'bob' ? actions : user === 'reader' ? actions.filter((a) => a === 'pull') : []),
    });
  });
  after(async () => {
    await reg?.stop();
  });

  test('push and pull with tokens; tokens are cached per scope', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'bob', password: 'builder' }) });
    try {
      const img = makeImage([1000, 2000, 3000]);
      const ref = parseReference(`${reg.host}/tok/app:1`);
      const { digest } = await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      const afterPush = reg.tokensIssued();
      // One token for pull+push of this repository (plus at most one for the first anonymous-challenge round).
      assert.ok(afterPush <= 2, `issued ${afterPush} tokens`);
      assert.equal((await resolveImage(client, ref)).manifestDigest, digest);
      // A pull-only scope is a different token, fetched once and then reused.
      const n = reg.tokensIssued();
      await getManifest(client, ref);
      assert.equal(reg.tokensIssued(), n);
    } finally {
      await client.close();
    }
  });

  test('a user without push rights gets a clear error naming the reference', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'reader', password: 'r' }) });
    try {
      const img = makeImage([10]);
      const ref = parseReference(`${reg.host}/tok/denied:1`);
      await assert.rejects(pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) }), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.match(err.message, new RegExp(`${reg.host}/tok/denied:1`));
        assert.match(err.message, /docker login|denied|may/);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test('wrong credentials at the token server tell the user to log in', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'bob', password: 'wrong' }) });
    try {
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/tok/app:1`)), /docker login/);
    } finally {
      await client.close();
    }
  });

  test('404 names the reference and says what to check', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'bob', password: 'builder' }) });
    try {
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/tok/missing:nope`)), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.code, 'EREG_NOT_FOUND');
        assert.match(err.message, new RegExp(`${reg.host}/tok/missing:nope`));
        assert.match(err.message, /check the repository name and tag/);
        return true;
      });
    } finally {
      await client.close();
    }
  });
});

describe('403 from a registry', () => {
  let server: Server;
  let host: string;
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/v2/' || req.method === 'HEAD') {
        res.writeHead(req.url === '/v2/' ? 200 : 403).end();
        return;
      }
      res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  test('403 names the reference, the registry message and what to do', async () => {
    const client = new RegistryClient({ dockerConfig: false });
    try {
      await assert.rejects(getManifest(client, parseReference(`${host}/private/app:2`)), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.code, 'EREG_DENIED');
        assert.match(err.message, new RegExp(`${host}/private/app:2`));
        assert.match(err.message, /DENIED: requested access/);
        assert.match(err.message, /docker login/);
        return true;
      });
    } finally {
      await client.close();
    }
  });

  test('https to a plain-http registry suggests registry.insecure', async () => {
    const client = new RegistryClient({ dockerConfig: false, hosts: { [host]: { insecure: false } }, retry: { attempts: 1 } });
    try {
      await assert.rejects(getManifest(client, parseReference(`${host}/private/app:2`)), /registry\.insecure=true/);
    } finally {
      await client.close();
    }
  });
});

describe('token refresh after a 401', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'token', users: { bob: 'builder' }, expiredTokens: 1 });
  });
  after(async () => {
    await reg?.stop();
  });

  test('a refused (expired) token is dropped and a fresh one fetched', async () => {
    const client = new RegistryClient({ dockerConfig: false, credentials: () => ({ username: 'bob', password: 'builder' }) });
    try {
      // One scope only: the first token (expired) is refused, the second is accepted, and the
      // registry's real answer (404: nothing pushed yet) comes through.
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/tok/refresh:1`)), (err: unknown) => err instanceof ObdkitError && err.code === 'EREG_NOT_FOUND');
      assert.equal(reg.tokensIssued(), 2);
      const img = makeImage([10]);
      const ref = parseReference(`${reg.host}/tok/refresh:1`);
      await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      assert.ok((await getManifest(client, ref)).bytes.equals(img.manifest));
    } finally {
      await client.close();
    }
  });
});

describe('https registry with its own CA', () => {
  let reg: RunningRegistry;
  before(async () => {
    reg = await startRegistry({ tls: true });
  });
  after(async () => {
    await reg?.stop();
  });

  test('trusted through the per-registry CA setting', async () => {
    const client = new RegistryClient({ dockerConfig: false, hosts: { [reg.host]: { insecure: false, ca: reg.caCert! } } });
    try {
      const img = makeImage([50]);
      const ref = parseReference(`${reg.host}/tls/app:1`);
      const { digest } = await pushImage(client, ref, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
      assert.equal((await resolveImage(client, ref)).manifestDigest, digest);
    } finally {
      await client.close();
    }
  });

  test('without the CA the error says what to do', async () => {
    const client = new RegistryClient({ dockerConfig: false, hosts: { [reg.host]: { insecure: false } }, retry: { attempts: 1 } });
    try {
      await assert.rejects(getManifest(client, parseReference(`${reg.host}/tls/app:1`)), (err: unknown) => {
        assert.ok(err instanceof ObdkitError);
        assert.equal(err.code, 'EREG_TLS');
        assert.match(err.message, /CA certificate/);
        return true;
      });
    } finally {
      await client.close();
    }
  });
});
