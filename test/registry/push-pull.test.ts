// Blob and image round trips against a real registry: monolithic and chunked uploads, verified
// downloads (a size or digest mismatch is an error, never a complete stream), pushImage + resolveImage.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../../src/registry/client.js';
import { parseReference } from '../../src/registry/reference.js';
import { bufferSource, fileSource, uploadBlob } from '../../src/registry/upload.js';
import { downloadBlob, getBlobBytes, headBlob, openBlob, resolveImage } from '../../src/registry/pull.js';
import { pushImage } from '../../src/registry/push.js';
import { isOverlaybdManifest } from '../../src/oci/overlaybd.js';
import { startRegistry, type RunningRegistry } from '../helpers/registry.js';
import { makeImage, randomBlob, writeRandomFile } from './fixtures.js';

async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}

describe('push and pull against a real registry', () => {
  let reg: RunningRegistry;
  let client: RegistryClient;
  let work: string;
  before(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ dockerConfig: false });
    work = await mkdtemp(join(tmpdir(), 'obdkit-pushpull-'));
  });
  after(async () => {
    await client?.close();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  for (const size of [1, 5 << 20]) {
    test(`blob of ${size} bytes round-trips (monolithic upload)`, async () => {
      const ref = parseReference(`${reg.host}/rt/small:1`);
      const b = randomBlob(size);
      const st = await uploadBlob(client, ref, { digest: b.digest, size }, bufferSource(b.data));
      assert.equal(st.outcome, 'uploaded');
      assert.equal(await headBlob(client, ref, b.digest), size);
      const back = await getBlobBytes(client, ref, { mediaType: 'x', digest: b.digest, size });
      assert.ok(back.equals(b.data));
      const again = await uploadBlob(client, ref, { digest: b.digest, size }, bufferSource(b.data));
      assert.equal(again.outcome, 'exists');
    });
  }

  test('200 MiB blob streamed from a file round-trips (chunked upload, verified download)', async () => {
    const size = 200 << 20;
    const src = join(work, 'big.bin');
    const digest = await writeRandomFile(src, size);
    const ref = parseReference(`${reg.host}/rt/big:1`);
    const st = await uploadBlob(client, ref, { digest, size }, await fileSource(src), { chunkSize: 48 << 20 });
    assert.equal(st.outcome, 'uploaded');
    assert.equal(st.bytesSent, size);
    const dst = join(work, 'big.out');
    await downloadBlob(client, ref, digest, dst, size);
    assert.equal(await fileDigest(dst), digest);
    await rm(dst);
  });

  test('a blob whose bytes do not match the digest is an error, never a complete stream', async () => {
    const ref = parseReference(`${reg.host}/rt/small:1`);
    const b = randomBlob(1000);
    await uploadBlob(client, ref, { digest: b.digest, size: b.data.length }, bufferSource(b.data));
    // Ask for the right blob but claim a wrong size: the stream must fail rather than end.
    const stream = await openBlob(client, ref, b.digest, 999);
    await assert.rejects(async () => {
      for await (const _ of stream) {
        /* drain */
      }
    }, /EDIGEST_MISMATCH|more bytes than/);
    await assert.rejects(downloadBlob(client, ref, b.digest, join(work, 'bad.out'), 1001), /got 1000 bytes, expected 1001/);
  });

  test('pushImage uploads blobs, then the manifest; resolveImage reads it back', async () => {
    const img = makeImage([3000, 70000]);
    const ref = parseReference(`${reg.host}/rt/image:v1`);
    const res = await pushImage(client, ref, {
      manifest: img.manifest,
      mediaType: img.mediaType,
      blobs: [img.config, ...img.layers].map((b) => ({ descriptor: b.descriptor, source: bufferSource(b.data) })),
    });
    assert.match(res.digest, /^sha256:[0-9a-f]{64}$/);
    const r = await resolveImage(client, ref);
    assert.equal(r.manifestDigest, res.digest);
    assert.ok(r.manifestBytes.equals(img.manifest));
    assert.equal(r.manifest.layers.length, 2);
    assert.ok(isOverlaybdManifest(r.manifest));
    assert.deepEqual(r.config.rootfs.diff_ids, img.layers.map((l) => l.descriptor.digest));
  });
});
