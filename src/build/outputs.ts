// What a build's result becomes: the output specs BuildKit clients send (exporter type + attrs), parsed
// into one shape, and the operations behind them on a BuiltImage (run-build.ts):
//   image (registry)  → assemble the overlaybd image; push it under each name when `push=true`
//   oci / docker      → an image archive file
//   tar / local       → the final rootfs as a tar file or a directory, read from a read-only view
// Destinations here are local paths; the server writes to a temporary file and streams it to the
// client. Layers are always overlaybd blobs: compression choices of an output are noted, not applied.
// An image output that pushes can start before the build ends: startEarlyPush gives an EarlyLayerPush
// that the build's `onLayer` hook feeds (feedEarlyPush) and exportToRegistry then finishes (config,
// remaining layers, manifest); the caller closes it afterwards, whatever happened. Base layers read
// lazily from a registry (LayerRecord.origin) are mounted or copied by the push, and fetched into the
// store first for archives.
// `obdkit build --output k=v,...` names its output as text with a local `dest`: parseOutputSpec reads
// it through the same parseOutput, and writeLocalOutput performs it, saying what it did in one line.
import { resolve } from 'node:path';
import type { RegistryClient, RegistryHostOptions } from '../registry/client.js';
import type { CredentialProvider } from '../registry/credentials.js';
import { parseReference } from '../registry/reference.js';
import { pushExportImage } from '../exporter/registry-push.js';
import { writeDockerArchive, writeOciArchive } from '../exporter/archive-writers.js';
import { writeRootfsTar } from '../exporter/rootfs-tar.js';
import { exportLocal } from './local-output.js';
import type { ExportImage } from '../exporter/image.js';
import { EarlyLayerPush, type EarlyPushOptions } from '../exporter/early-push.js';
import type { ContentStore } from '../store/content-store.js';
import { ObdkitError } from '../util/errors.js';
import { exportImageFrom } from '../../worker/build/image-output.js';
import { ViewSet } from '../../worker/build/step-device.js';
import { ensureLocalBlob } from '../../worker/build/remote-blobs.js';
import type { BuildService } from './service.js';
import type { BuiltImage } from './run-build.js';
import type { SealOutcome } from '../../worker/commit/seal.js';

/** An image to assemble, name and maybe push; `oci`: OCI media types rather than Docker's. */
export interface ImageOutput {
  type: 'image';
  names: string[];
  push: boolean;
  insecure: boolean;
  oci: boolean;
}

/** An image archive file: an OCI layout (`oci`) or `docker save` format (`docker`). */
export interface ArchiveOutput {
  type: 'oci' | 'docker';
  names: string[];
  oci: boolean;
}

/** An exporter as a BuildKit client asks for it; `ignored` lists attributes that do not apply. */
export type OutputSpec =
  | (ImageOutput & { ignored: string[] })
  | (ArchiveOutput & { ignored: string[] })
  | { type: 'tar' | 'local'; ignored: string[] };

/** `--output` of `obdkit build`: an image by name, or a file or directory `dest` on this machine. */
export type LocalOutputSpec = ImageOutput | { type: 'oci' | 'docker' | 'tar' | 'local'; dest: string };

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

/** Splits `k=v,k=v` (a value may be quoted to hold commas). */
export function parseKeyValues(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  const parts = spec.match(/(?:[^,"]+|"[^"]*")+/g) ?? [];
  for (const p of parts) {
    const i = p.indexOf('=');
    if (i < 0) throw new ObdkitError('EUSAGE', `expected key=value in ${JSON.stringify(spec)}, got ${JSON.stringify(p)}`);
    out[p.slice(0, i).trim()] = p.slice(i + 1).trim().replace(/^"|"$/g, '');
  }
  return out;
}

/**
 * `type=image,name=REF[,push=true][,registry.insecure=true][,oci-mediatypes=false]` or
 * `type=oci|docker|tar|local,dest=PATH` (no type: `image`). An image must be named here: the command
 * prints its digest, and without a name or push nothing outside the store would hold it.
 */
export function parseOutputSpec(text: string): LocalOutputSpec {
  const kv = parseKeyValues(text);
  const spec = parseOutput(kv['type'] ?? 'image', kv);
  if (spec.type === 'image') {
    if (spec.names.length === 0) throw new ObdkitError('EUSAGE', 'type=image needs name=REF');
    return { type: 'image', names: spec.names, push: spec.push, insecure: spec.insecure, oci: spec.oci };
  }
  const dest = kv['dest'];
  if (!dest) throw new ObdkitError('EUSAGE', `type=${spec.type} needs dest=PATH`);
  return { type: spec.type, dest };
}

/**
 * The image manifest, config and layer blobs of a built result. A layer read lazily from a registry
 * and not in the store keeps its origin, so that a push can mount or copy it from there.
 */
export function assembleBuilt(service: BuildService, built: BuiltImage, oci: boolean): ExportImage {
  const image = exportImageFrom(service.store, built.chain, built.image, built.platform, { oci });
  const layers = image.layers.map((l, i) => {
    const rec = built.chain.layers[i];
    return rec?.origin && rec.digest === l.descriptor.digest && !service.store.hasBlob(rec.digest) ? { ...l, origin: { repository: rec.origin.repository } } : l;
  });
  return { ...image, layers };
}

export interface PushedImage {
  image: ExportImage;
  /** Names pushed (empty when the spec did not ask to push). */
  pushed: { name: string; digest: string }[];
}

/** The registry client an image output pushes with: the service's hosts, plus `registry.insecure`. */
function pushClient(service: BuildService, spec: ImageOutput, credentials?: CredentialProvider): RegistryClient {
  const extra: Record<string, RegistryHostOptions> = {};
  if (spec.insecure) for (const n of spec.names) extra[parseReference(n).host] = { insecure: true };
  return service.registryClient(credentials, extra);
}

/**
 * For an image output that pushes: uploads of sealed layers that start while the build runs (feed it
 * with feedEarlyPush from the `onLayer` hook, hand it to exportToRegistry, close it in a finally).
 * Undefined when the output does not push.
 */
export function startEarlyPush(
  service: BuildService,
  spec: ImageOutput,
  credentials?: CredentialProvider,
  opts: Omit<EarlyPushOptions, 'closeClient'> = {},
): EarlyLayerPush | undefined {
  if (!spec.push) return undefined;
  return new EarlyLayerPush(pushClient(service, spec, credentials), spec.names, { ...opts, closeClient: true });
}

/** The `onLayer` side of an early push: a sealed layer starts uploading (a step that left none, nothing). */
export function feedEarlyPush(store: ContentStore, early: EarlyLayerPush | undefined, outcome: SealOutcome): void {
  const l = outcome.layer;
  if (early && l) early.add({ digest: l.digest, size: l.size, path: store.blobPath(l.digest) });
}

/**
 * `type=image`: assembles the image and, with `push`, pushes it under every name. With `early`
 * (startEarlyPush for this spec) the layers it uploaded are only waited for, on its client.
 */
export async function exportToRegistry(
  service: BuildService,
  built: BuiltImage,
  spec: ImageOutput,
  credentials?: CredentialProvider,
  early?: EarlyLayerPush,
): Promise<PushedImage> {
  const image = assembleBuilt(service, built, spec.oci);
  if (!spec.push) return { image, pushed: [] };
  if (early) return { image, pushed: await pushExportImage(image, { client: early.client, names: spec.names, early }) };
  const client = pushClient(service, spec, credentials);
  try {
    return { image, pushed: await pushExportImage(image, { client, names: spec.names }) };
  } finally {
    await client.close();
  }
}

/** Archives hold every blob: layers read lazily from a registry are fetched into the store first. */
async function withLocalLayers(service: BuildService, built: BuiltImage, image: ExportImage, credentials?: CredentialProvider): Promise<ExportImage> {
  if (!image.layers.some((l) => l.origin)) return image;
  const client = service.registryClient(credentials);
  try {
    const layers: ExportImage['layers'] = [];
    for (const [i, l] of image.layers.entries()) {
      const rec = built.chain.layers[i];
      if (!l.origin || !rec) {
        layers.push(l);
        continue;
      }
      layers.push({ descriptor: l.descriptor, path: await ensureLocalBlob(service.store, rec, client) });
    }
    return { ...image, layers };
  } finally {
    await client.close();
  }
}

/** `type=oci` / `type=docker`: writes the image archive to `dest`. */
export async function writeImageArchive(
  service: BuildService,
  built: BuiltImage,
  spec: ArchiveOutput,
  dest: string,
  credentials?: CredentialProvider,
): Promise<ExportImage> {
  const image = await withLocalLayers(service, built, assembleBuilt(service, built, spec.oci), credentials);
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

/**
 * Performs an `obdkit build --output` and says what it did through `say` (one line each). Returns the
 * image manifest digest, when the output is an image. `early`: startEarlyPush of an image output.
 */
export async function writeLocalOutput(
  service: BuildService,
  built: BuiltImage,
  out: LocalOutputSpec,
  say: (line: string) => void,
  early?: EarlyLayerPush,
): Promise<string | undefined> {
  switch (out.type) {
    case 'image': {
      const { image, pushed } = await exportToRegistry(service, built, out, undefined, early);
      const digest = image.manifestDescriptor.digest;
      if (!out.push) say(`image ${digest} built (not pushed: add push=true)\n`);
      for (const p of pushed) say(`pushed ${p.name}@${p.digest}\n`);
      return digest;
    }
    case 'oci':
    case 'docker': {
      // The flag names no image inside the archive; media types follow the archive kind, as parseOutput's default.
      const image = await writeImageArchive(service, built, { type: out.type, names: [], oci: out.type === 'oci' }, resolve(out.dest));
      const digest = image.manifestDescriptor.digest;
      say(`wrote ${out.type === 'oci' ? 'OCI layout' : 'Docker'} archive ${out.dest} (${digest})\n`);
      return digest;
    }
    case 'tar':
    case 'local':
      await writeRootfs(service, built, out.type, resolve(out.dest));
      say(`exported rootfs to ${out.dest}\n`);
      return undefined;
  }
}
