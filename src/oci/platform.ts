// Platform strings (`os/arch[/variant]`) and choosing one manifest out of an index. Matching follows
// the usual containerd rules in a reduced form: os and architecture must match; a requested variant
// must match (arm64 treats a missing variant as v8); without a requested variant the first match wins.
import { ObdkitError } from '../util/errors.js';
import type { Descriptor, ImageIndex, Platform } from './types.js';

export const defaultPlatform: Platform = { os: 'linux', architecture: 'amd64' };

export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => x === '')) {
    throw new ObdkitError('EUSAGE', `invalid platform ${JSON.stringify(s)} (expected os/arch[/variant])`);
  }
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2]) p.variant = parts[2];
  return p;
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

function normalizedVariant(p: Platform): string | undefined {
  if (p.architecture === 'arm64' && (p.variant === undefined || p.variant === '')) return 'v8';
  return p.variant || undefined;
}

export function platformMatches(candidate: Platform, wanted: Platform): boolean {
  if (candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false;
  const wv = normalizedVariant(wanted);
  return wv === undefined || normalizedVariant(candidate) === wv;
}

/** Picks the manifest for `wanted` from an index; throws naming the platforms that are there. */
export function selectManifest(index: ImageIndex, wanted: Platform = defaultPlatform, ref = ''): Descriptor {
  const found = index.manifests.find((d) => d.platform !== undefined && platformMatches(d.platform, wanted));
  if (found) return found;
  const have = index.manifests.filter((d) => d.platform).map((d) => formatPlatform(d.platform!));
  throw new ObdkitError(
    'ENOPLATFORM',
    `no manifest for platform ${formatPlatform(wanted)} (index has: ${have.join(', ') || 'no platforms'})`,
    { ref },
  );
}
