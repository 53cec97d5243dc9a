// The one worker this daemon reports through ListWorkers and LLBBridge.Ping. Clients take the first
// platform as the default build and target platform, so the native one comes first; on amd64 the
// micro-architecture levels the CPU supports follow, as BuildKit lists them.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Platform } from './gen/buildkit/ops.js';
import type { BuildkitVersion, GCPolicy, WorkerRecord } from './gen/buildkit/worker.js';

export const LABEL_PREFIX = 'org.mobyproject.buildkit.worker.';

export interface WorkerInfoOptions {
  id?: string;
  hostname?: string;
  labels?: Record<string, string>;
  gcPolicy?: { all: boolean; keepDurationNs: bigint; reservedSpace: bigint; maxUsedSpace: bigint; minFreeSpace: bigint; filters: string[] }[];
  /** Overrides the detected platform list (first = default). */
  platforms?: Platform[];
}

const AMD64_LEVELS: { variant: string; flags: string[] }[] = [
  { variant: 'v2', flags: ['cx16', 'lahf_lm', 'popcnt', 'sse4_1', 'sse4_2', 'ssse3'] },
  { variant: 'v3', flags: ['avx', 'avx2', 'bmi1', 'bmi2', 'f16c', 'fma', 'abm', 'movbe', 'xsave'] },
  { variant: 'v4', flags: ['avx512f', 'avx512bw', 'avx512cd', 'avx512dq', 'avx512vl'] },
];

function platform(os: string, architecture: string, variant = ''): Platform {
  return { OS: os, Architecture: architecture, Variant: variant, OSVersion: '', OSFeatures: [] };
}

function cpuFlags(): Set<string> {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const line = info.split('\n').find((l) => l.startsWith('flags'));
    return new Set((line?.split(':')[1] ?? '').trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

export function nativePlatforms(): Platform[] {
  switch (process.arch) {
    case 'x64': {
      const out = [platform('linux', 'amd64')];
      const flags = cpuFlags();
      for (const level of AMD64_LEVELS) {
        if (!level.flags.every((f) => flags.has(f))) break;
        out.push(platform('linux', 'amd64', level.variant));
      }
      return out;
    }
    case 'arm64':
      return [platform('linux', 'arm64')];
    case 'arm':
      return [platform('linux', 'arm', 'v7')];
    default:
      return [platform('linux', process.arch)];
  }
}

export function workerRecord(version: BuildkitVersion, opts: WorkerInfoOptions = {}): WorkerRecord {
  const host = opts.hostname ?? hostname();
  const gc: GCPolicy[] = (opts.gcPolicy ?? []).map((p) => ({
    all: p.all,
    keepDuration: p.keepDurationNs,
    reservedSpace: p.reservedSpace,
    maxUsedSpace: p.maxUsedSpace,
    minFreeSpace: p.minFreeSpace,
    filters: p.filters,
  }));
  return {
    ID: opts.id ?? `obdkit-${host}`,
    Labels: {
      [`${LABEL_PREFIX}executor`]: 'oci',
      [`${LABEL_PREFIX}snapshotter`]: 'overlaybd',
      [`${LABEL_PREFIX}hostname`]: host,
      [`${LABEL_PREFIX}network`]: 'host',
      [`${LABEL_PREFIX}oci.process-mode`]: 'sandbox',
      [`${LABEL_PREFIX}selinux.enabled`]: 'false',
      ...opts.labels,
    },
    platforms: opts.platforms ?? nativePlatforms(),
    GCPolicy: gc,
    BuildkitVersion: version,
    CDIDevices: [],
  };
}
