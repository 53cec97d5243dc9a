// Platform strings (`linux/arm64/v8`) and the build arguments BuildKit derives from the build and target
// platforms (BUILDPLATFORM, TARGETARCH, ...), which are in scope for FROM lines and for `ARG NAME` in stages.
import type { Platform } from '../src/solver/ops.js';

const ARCH_FROM_NODE: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** The platform this process runs on, in OCI terms. */
export function hostPlatform(): Platform {
  const architecture = ARCH_FROM_NODE[process.arch] ?? process.arch;
  return architecture === 'arm' ? { os: 'linux', architecture, variant: 'v7' } : { os: 'linux', architecture };
}

/** Parses `os[/arch[/variant]]`, `arch` alone meaning linux; normalises common aliases. */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().toLowerCase().split('/');
  if (parts.some((p) => p === '') || parts.length > 3) throw new Error(`invalid platform "${s}"`);
  let os = 'linux';
  let arch: string;
  let variant: string | undefined;
  if (parts.length === 1) arch = parts[0]!;
  else [os, arch, variant] = parts as [string, string, string | undefined];
  if (arch === 'x86_64' || arch === 'x86-64') arch = 'amd64';
  if (arch === 'aarch64') arch = 'arm64';
  if (arch === 'arm64' && variant === 'v8') variant = undefined;
  if (arch === 'arm' && variant === undefined) variant = 'v7';
  return variant ? { os, architecture: arch, variant } : { os, architecture: arch };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((x) => x).join('/');
}

/** The automatic platform args, in BuildKit's order. */
export function platformArgs(build: Platform, target: Platform, targetStage: string): [string, string][] {
  return [
    ['BUILDPLATFORM', formatPlatform(build)],
    ['BUILDOS', build.os],
    ['BUILDOSVERSION', ''],
    ['BUILDARCH', build.architecture],
    ['BUILDVARIANT', build.variant ?? ''],
    ['TARGETPLATFORM', formatPlatform(target)],
    ['TARGETOS', target.os],
    ['TARGETOSVERSION', ''],
    ['TARGETARCH', target.architecture],
    ['TARGETVARIANT', target.variant ?? ''],
    ['TARGETSTAGE', targetStage || 'default'],
  ];
}
