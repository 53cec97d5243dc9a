// What a build's result becomes: the output specs BuildKit clients send (exporter type + attrs), parsed
// into one shape, and the operations behind them on a BuiltImage (run-build.ts):
//   image (registry)  → assemble the overlaybd image; push it under each name when `push=true`
//   oci / docker      → an image archive file
//   tar / local       → the final rootfs as a tar file or a directory, read from a read-only view
// Destinations here are local paths; the server writes to a temporary file and streams it to the
// client. Layers are always overlaybd blobs: compression choices of an output are noted, not applied.
import type { RegistryHostOptions } from '../registry/client.js';
import type { CredentialProvider } from '../registry/credentials.js';
import { parseReference } from '../registry/reference.js';
import { pushExportImage } from '../exporter/registry-push.js';
import { writeDockerArchive, writeOciArchive } from '../exporter/archive-writers.js';
import { writeRootfsTar } from '../exporter/rootfs-tar.js';
import { exportLocal } from '../exporter/local.js';
import type { ExportImage } from '../exporter/image.js';
import { ObdkitError } from '../util/errors.js';
import { exportImageFrom } from '../../worker/build/image-output.js';
import { ViewSet } from '../../worker/build/step-device.js';
import type { BuildService } from './service.js';
import type { BuiltImage } from './run-build.js';

export type OutputSpec =
  | { type: 'image'; names: string[]; push: boolean; insecure: boolean; oci: boolean; ignored: string[] }
  | { type: 'oci' | 'docker'; names: string[]; oci: boolean; ignored: string[] }
  | { type: 'tar' | 'local'; ignored: string[] };

/** Attributes that ask for a layer encoding; overlaybd layers are written the same whatever they say. */
const ENCODING_ATTRS = ['compression', 'compression-level', 'force-compression', 'estargz'];

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['true', '1', 'yes', 'on'].includes(v.toLowerCase());
}

/**
 * An exporter as clients name it (`image`, `registry`, `oci`, `docker`, `tar`, `local`) with its attrs.
 * `oci-mediatypes` defaults to true (OCI manifests) except for `docker` archives.
 */
export function parseOutput(type: string, attrs: Record<string, string>): OutputSpec {
  const ignored = ENCODING_ATTRS.filter((k) => attrs[k] !== undefined).map((k) => `${k}=${attrs[k]}`);
  const names = (attrs['name'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  switch (type) {
    case 'image':
    case 'registry': {
      const push = type === 'registry' || truthy(attrs['push']);
      if (push && names.length === 0) throw new ObdkitError('EUSAGE', `output type=${type} needs name=REF to push`);
      const oci = attrs['oci-mediatypes'] === undefined || truthy(attrs['oci-mediatypes']);
      return { type: 'image', names, push, insecure: truthy(attrs['registry.insecure']), oci, ignored };
    }
    case 'oci':
    case 'docker': {
      const oci = attrs['oci-mediatypes'] === undefined ? type === 'oci' : truthy(attrs['oci-mediatypes']);
      return { type, names, oci, ignored };
    }
    case 'tar':
    case 'local':
      return { type, ignored };
    default:
      throw new ObdkitError('EUSAGE', `unknown output type ${type} (image, registry, oci, docker, tar, local)`);
  }
}

/** The image manifest, config and layer blobs of a built result. */
export function assembleBuilt(service: BuildService, built: BuiltImage, oci: boolean): ExportImage {
  return exportImageFrom(service.store, built.chain, built.image, built.platform, { oci });
}

export interface PushedImage {
  image: ExportImage;
  /** Names pushed (empty when the spec did not ask to push). */
  pushed: { name: string; digest: string }[];
}

/** `type=image`: assembles the image and, with `push`, pushes it under every name. */
export async function exportToRegistry(
  service: BuildService,
  built: BuiltImage,
  spec: Extract<OutputSpec, { type: 'image' }>,
  credentials?: CredentialProvider,
): Promise<PushedImage> {
  const image = assembleBuilt(service, built, spec.oci);
  if (!spec.push) return { image, pushed: [] };
  const extra: Record<string, RegistryHostOptions> = {};
  if (spec.insecure) for (const n of spec.names) extra[parseReference(n).host] = { insecure: true };
  const client = service.registryClient(credentials, extra);
  try {
    return { image, pushed: await pushExportImage(image, { client, names: spec.names }) };
  } finally {
    await client.close();
  }
}

/** `type=oci` / `type=docker`: writes the image archive to `dest`. */
export async function writeImageArchive(
  service: BuildService,
  built: BuiltImage,
  spec: Extract<OutputSpec, { type: 'oci' | 'docker' }>,
  dest: string,
): Promise<ExportImage> {
  const image = assembleBuilt(service, built, spec.oci);
  if (spec.type === 'oci') await writeOciArchive(image, dest, { names: spec.names });
  else await writeDockerArchive(image, dest, { names: spec.names });
  return image;
}

/** Runs `fn` over a read-only view of the built rootfs; the view is released afterwards. */
export async function withRootfs<T>(service: BuildService, built: BuiltImage, fn: (rootfs: string) => Promise<T>): Promise<T> {
  const views = new ViewSet({ store: service.store, snapshotter: service.snapshotter });
  try {
    return await fn(await views.mount(built.chain));
  } finally {
    await views.close();
  }
}

/** `type=tar` (a file) or `type=local` (a directory): the final rootfs. */
export async function writeRootfs(service: BuildService, built: BuiltImage, kind: 'tar' | 'local', dest: string): Promise<void> {
  await withRootfs(service, built, (rootfs) => (kind === 'tar' ? writeRootfsTar(rootfs, dest) : exportLocal(rootfs, dest)));
}
