// Fixtures for the build pipeline tests: a tiny busybox-static root filesystem published as an
// ordinary one-layer OCI image in a test registry (fast to convert), a build root, and a reader that
// mounts a pushed overlaybd image read-only (`view` over its pulled layer blobs) for inspection.
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { packRootfs } from '../../src/base-image/pack-rootfs.js';
import { pushBaseImage } from '../../src/base-image/push-base.js';
import { RegistryClient } from '../../src/registry/client.js';
import { downloadBlob, resolveImage } from '../../src/registry/pull.js';
import { parseReference } from '../../src/registry/reference.js';
import type { ImageManifest } from '../../src/oci/types.js';
import { FuseLoopSnapshotter } from '../../worker/device/fuse-loop-snapshotter.js';

export const BUSYBOX = '/bin/busybox';

/** A root filesystem with busybox and its applets, /etc/passwd with root and `app` (1000), /tmp. */
export async function busyboxRootfs(dir: string): Promise<void> {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'home/app', 'usr/bin', 'var']) mkdirSync(join(dir, d), { recursive: true });
  chmodSync(join(dir, 'tmp'), 0o1777);
  copyFileSync(BUSYBOX, join(dir, 'bin/busybox'));
  chmodSync(join(dir, 'bin/busybox'), 0o755);
  const list = (await execa(BUSYBOX, ['--list'])).stdout.split('\n').filter((x) => x && x !== 'busybox');
  for (const applet of list) symlinkSync('busybox', join(dir, 'bin', applet));
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n');
  writeFileSync(join(dir, 'etc/group'), 'root:x:0:\napp:x:1000:\n');
  writeFileSync(join(dir, 'etc/base-file'), 'from the base image\n');
  chownSync(join(dir, 'home/app'), 1000, 1000);
}

/** Builds the busybox rootfs, packs it and pushes it as `<host>/base/busybox:1`; returns the ref. */
export async function pushBusyboxBase(host: string, work: string): Promise<string> {
  const root = join(work, 'base-rootfs');
  mkdirSync(root, { recursive: true });
  await busyboxRootfs(root);
  const tar = join(work, 'base.tar.gz');
  const packed = await packRootfs(root, tar, { sourceDateEpoch: 1700000000 });
  const ref = `${host}/base/busybox:1`;
  await pushBaseImage({ tarPath: tar, digest: packed.digest, diffId: packed.diffId, size: packed.size }, ref);
  return ref;
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Pulls an image's layers into `dir` and mounts them read-only; `fn` sees the rootfs. */
export async function withPulledImage<T>(
  ref: string,
  dir: string,
  fn: (rootfs: string, manifest: ImageManifest, blobs: string[], config: Buffer) => Promise<T>,
): Promise<T> {
  mkdirSync(dir, { recursive: true });
  const client = new RegistryClient();
  const snap = new FuseLoopSnapshotter({ runDir: join(dir, 'run') });
  try {
    const r = parseReference(ref);
    const img = await resolveImage(client, r, { os: 'linux', architecture: 'amd64' });
    const blobs: string[] = [];
    for (const l of img.manifest.layers) {
      const p = join(dir, l.digest.replace('sha256:', ''));
      await downloadBlob(client, r, l.digest, p, l.size);
      blobs.push(p);
    }
    const h = await snap.view(blobs.map((path) => ({ kind: 'file', path })));
    try {
      return await fn(h.mountpoint, img.manifest, blobs, img.configBytes);
    } finally {
      await snap.remove(h);
    }
  } finally {
    await snap.close();
    await client.close();
  }
}
