// `obdkit image inspect REF` and `obdkit image copy SRC DST`: looking at and moving registry images
// by hand. Thin wrappers over src/registry/ (pull, copy) and src/oci/ (overlaybd recognition).
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { isOverlaybdLayer, isOverlaybdManifest } from '../oci/overlaybd.js';
import { defaultPlatform, formatPlatform, parsePlatform } from '../oci/platform.js';
import { RegistryClient, type RegistryHostOptions } from '../registry/client.js';
import { copyImage } from '../registry/copy.js';
import { resolveImage, type ResolvedImage } from '../registry/pull.js';
import { formatReference, parseReference, type ImageReference } from '../registry/reference.js';
import { ObdkitError } from '../util/errors.js';
import { runAction } from './run.js';

interface RegistryCliOptions {
  insecure?: boolean;
  insecureRegistry?: string[];
  caFile?: string;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function clientFor(refs: ImageReference[], o: RegistryCliOptions): RegistryClient {
  const hosts: Record<string, RegistryHostOptions> = {};
  let ca: Buffer | undefined;
  if (o.caFile) {
    try {
      ca = readFileSync(o.caFile);
    } catch (err) {
      throw new ObdkitError('EUSAGE', `cannot read --ca-file: ${(err as Error).message}`, { file: o.caFile });
    }
  }
  for (const r of refs) {
    const h: RegistryHostOptions = {};
    if (o.insecure || o.insecureRegistry?.includes(r.registry) || o.insecureRegistry?.includes(r.host)) h.insecure = true;
    if (ca) h.ca = ca;
    hosts[r.host] = h;
  }
  return new RegistryClient({ hosts });
}

function addRegistryOptions(cmd: Command): Command {
  return cmd
    .option('--insecure', 'talk plain http to the registries named on the command line')
    .option('--insecure-registry <host>', 'talk plain http to this registry (repeatable)', collect)
    .option('--ca-file <pem>', 'extra CA certificate for the registries');
}

export interface InspectReport {
  reference: string;
  index?: { digest: string; mediaType: string; platforms: { digest: string; platform?: string }[] };
  platform: string;
  digest: string;
  mediaType: string;
  overlaybd: boolean;
  config: { digest: string; size: number; os?: string; architecture?: string; diffIds: string[]; created?: string };
  layers: { digest: string; size: number; mediaType: string; overlaybd: boolean; annotations: Record<string, string> }[];
  manifest: unknown;
  configDocument: unknown;
}

export function inspectReport(r: ResolvedImage): InspectReport {
  const report: InspectReport = {
    reference: formatReference(r.ref),
    platform: formatPlatform({ os: r.config.os ?? '?', architecture: r.config.architecture ?? '?', ...(r.config.variant ? { variant: r.config.variant } : {}) }),
    digest: r.manifestDigest,
    mediaType: r.manifestMediaType,
    overlaybd: isOverlaybdManifest(r.manifest),
    config: { digest: r.manifest.config.digest, size: r.manifest.config.size, diffIds: r.config.rootfs.diff_ids },
    layers: r.manifest.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, overlaybd: isOverlaybdLayer(l), annotations: l.annotations ?? {} })),
    manifest: JSON.parse(r.manifestBytes.toString('utf8')) as unknown,
    configDocument: r.config.raw,
  };
  if (r.config.os) report.config.os = r.config.os;
  if (r.config.architecture) report.config.architecture = r.config.architecture;
  if (r.config.created) report.config.created = r.config.created;
  if (r.index) {
    report.index = {
      digest: r.index.digest,
      mediaType: r.index.mediaType,
      platforms: r.index.index.manifests.map((m) => ({ digest: m.digest, ...(m.platform ? { platform: formatPlatform(m.platform) } : {}) })),
    };
  }
  return report;
}

function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function formatInspectReport(rep: InspectReport): string {
  const lines: string[] = [];
  lines.push(`Reference:  ${rep.reference}`);
  if (rep.index) {
    lines.push(`Index:      ${rep.index.digest} (${rep.index.mediaType})`);
    for (const p of rep.index.platforms) lines.push(`              ${p.platform ?? '(no platform)'}  ${p.digest}`);
  }
  lines.push(`Manifest:   ${rep.digest} (${rep.mediaType})`);
  lines.push(`Platform:   ${rep.platform}`);
  lines.push(`Overlaybd:  ${rep.overlaybd ? 'yes' : 'no'}`);
  lines.push(`Config:     ${rep.config.digest} (${humanSize(rep.config.size)})${rep.config.created ? ` created ${rep.config.created}` : ''}`);
  const total = rep.layers.reduce((a, l) => a + l.size, 0);
  lines.push(`Layers:     ${rep.layers.length}, ${humanSize(total)} total`);
  rep.layers.forEach((l, i) => {
    lines.push(`  [${i}] ${l.digest}  ${humanSize(l.size)}  ${l.mediaType}${l.overlaybd ? '  overlaybd' : ''}`);
    for (const [k, v] of Object.entries(l.annotations)) lines.push(`        ${k}=${v}`);
  });
  return `${lines.join('\n')}\n`;
}

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('inspect and copy images in registries');

  addRegistryOptions(
    image
      .command('inspect')
      .description('show an image: manifest, config, layers, and whether it is an overlaybd image')
      .argument('<ref>', 'image reference, e.g. registry.example.com/app:1')
      .option('--json', 'print JSON (manifest, config and a summary)')
      .option('--platform <os/arch[/variant]>', 'platform to pick from a multi-platform index', formatPlatform(defaultPlatform)),
  ).action(
    runAction(async (refText: string, o: RegistryCliOptions & { json?: boolean; platform: string }) => {
      const ref = parseReference(refText);
      const client = clientFor([ref], o);
      try {
        const report = inspectReport(await resolveImage(client, ref, parsePlatform(o.platform)));
        process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : formatInspectReport(report));
      } finally {
        await client.close();
      }
    }),
  );

  addRegistryOptions(
    image
      .command('copy')
      .description('copy an image (a whole multi-platform index too): blobs first, manifest last; mounts blobs within one registry')
      .argument('<src>', 'source image reference')
      .argument('<dst>', 'destination image reference'),
  ).action(
    runAction(async (srcText: string, dstText: string, o: RegistryCliOptions) => {
      const src = parseReference(srcText);
      const dst = parseReference(dstText);
      const client = clientFor([src, dst], o);
      try {
        const res = await copyImage(client, src, dst);
        const counts = new Map<string, number>();
        for (const outcome of res.blobs.values()) counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
        const summary = [...counts].map(([k, v]) => `${v} ${k}`).join(', ') || 'no blobs';
        process.stdout.write(`${formatReference(dst)} ${res.digest} (blobs: ${summary})\n`);
      } finally {
        await client.close();
      }
    }),
  );
}
