// Image copy (mounts within a registry, whole indexes between registries) and the `obdkit image`
// commands run as real processes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource } from '../../src/registry/upload.js';
import { getManifest, resolveImage } from '../../src/registry/pull.js';
import { pushImage } from '../../src/registry/push.js';
import { copyImage } from '../../src/registry/copy.js';
import { MediaType } from '../../src/oci/media-types.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { makeImage, type TestImage } from './fixtures.js';

function blobsOf(img: TestImage) {
  return [img.config, ...img.layers].map((b) => ({ descriptor: b.descriptor, source: bufferSource(b.data) }));
}

const imageModule = fileURLToPath(new URL('../../src/cli/image.js', import.meta.url));

/** Runs `obdkit image …` as a real process through registerImageCommands. */
function cli(args: string[]) {
  const script = `
    import { Command } from 'commander';
    import { registerImageCommands } from ${JSON.stringify(imageModule)};
    const p = new Command().name('obdkit');
    registerImageCommands(p);
    await p.parseAsync(process.argv);`;
  return execa(process.execPath, ['--input-type=module', '-e', script, 'obdkit', ...args], { reject: false, env: { DOCKER_CONFIG: '/nonexistent' } });
}

describe('image copy and inspect', () => {
  let reg: RunningRegistry;
  let reg2: RunningRegistry;
  let client: RegistryClient;
  before(async () => {
    [reg, reg2] = await Promise.all([startRegistry(), startRegistry()]);
    client = new RegistryClient({ dockerConfig: false });
  });
  after(async () => {
    await client?.close();
    await Promise.all([reg?.stop(), reg2?.stop()]);
  });

  test('copy within one registry mounts every blob', async () => {
    const img = makeImage([5000, 6000]);
    const src = parseReference(`${reg.host}/team/a:1`);
    const { digest } = await pushImage(client, src, { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
    const dst = parseReference(`${reg.host}/other/b:copied`);
    const res = await copyImage(client, src, dst);
    assert.equal(res.digest, digest);
    assert.deepEqual([...res.blobs.values()], ['mounted', 'mounted', 'mounted']);
    assert.ok((await getManifest(client, dst)).bytes.equals(img.manifest));
  });

  test('copy of a multi-platform index between registries', async () => {
    const amd = makeImage([100], 'amd64');
    const arm = makeImage([200], 'arm64');
    const src = parseReference(`${reg.host}/multi/app:1`);
    const dAmd = (await pushImage(client, parseReference(`${reg.host}/multi/app@${sha256Digest(amd.manifest)}`), { manifest: amd.manifest, mediaType: amd.mediaType, blobs: blobsOf(amd) })).digest;
    const dArm = (await pushImage(client, parseReference(`${reg.host}/multi/app@${sha256Digest(arm.manifest)}`), { manifest: arm.manifest, mediaType: arm.mediaType, blobs: blobsOf(arm) })).digest;
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [
          { mediaType: MediaType.ociManifest, digest: dAmd, size: amd.manifest.length, platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: MediaType.ociManifest, digest: dArm, size: arm.manifest.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
      }),
    );
    const indexDigest = (await pushImage(client, src, { manifest: index, mediaType: MediaType.ociIndex, blobs: [] })).digest;
    const dst = parseReference(`${reg2.host}/mirror/app:1`);
    const res = await copyImage(client, src, dst);
    assert.equal(res.digest, indexDigest);
    assert.ok([...res.blobs.values()].every((o) => o === 'uploaded'));
    const arm64 = await resolveImage(client, dst, { os: 'linux', architecture: 'arm64' });
    assert.equal(arm64.manifestDigest, dArm);
    assert.equal(arm64.config.raw.config && (arm64.config.raw.config as { Labels: { label: string } }).Labels.label, 'arm64');
  });

  test('an index is refused while a child manifest is missing', async () => {
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [{ mediaType: MediaType.ociManifest, digest: sha256Digest('nothing'), size: 7, platform: { os: 'linux', architecture: 'amd64' } }],
      }),
    );
    await assert.rejects(pushImage(client, parseReference(`${reg.host}/multi/broken:1`), { manifest: index, mediaType: MediaType.ociIndex, blobs: [] }), /child manifest .* is not in/);
  });

  test('obdkit image inspect shows overlaybd layers (JSON and text)', async () => {
    const img = makeImage([4096]);
    const ref = `${reg.host}/cli/app:1`;
    await pushImage(client, parseReference(ref), { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
    const j = await cli(['image', 'inspect', '--json', ref]);
    assert.equal(j.exitCode, 0, j.stderr);
    const rep = JSON.parse(j.stdout) as { overlaybd: boolean; layers: { annotations: Record<string, string>; overlaybd: boolean }[]; digest: string };
    assert.equal(rep.overlaybd, true);
    assert.equal(rep.digest, sha256Digest(img.manifest));
    assert.equal(rep.layers[0]!.annotations['containerd.io/snapshot/overlaybd/blob-size'], '4096');
    assert.equal(rep.layers[0]!.annotations['containerd.io/snapshot/overlaybd/version'], '0.1.0');
    const t = await cli(['image', 'inspect', ref]);
    assert.equal(t.exitCode, 0, t.stderr);
    assert.match(t.stdout, /Overlaybd:\s+yes/);
    assert.match(t.stdout, /containerd\.io\/snapshot\/overlaybd\/blob-digest=sha256:/);
  });

  test('obdkit image copy, and a clear error for a missing image', async () => {
    const img = makeImage([123]);
    const src = `${reg.host}/cli/src:1`;
    await pushImage(client, parseReference(src), { manifest: img.manifest, mediaType: img.mediaType, blobs: blobsOf(img) });
    const c = await cli(['image', 'copy', src, `${reg.host}/cli/dst:2`]);
    assert.equal(c.exitCode, 0, c.stderr);
    assert.match(c.stdout, /2 mounted/);
    const missing = await cli(['image', 'inspect', `${reg.host}/cli/nope:1`]);
    assert.equal(missing.exitCode, 1);
    assert.match(missing.stderr, new RegExp(`${reg.host}/cli/nope:1`));
    assert.match(missing.stderr, /not found/);
  });
});
