// The OCI runtime spec (config.json of a runc bundle) as types, and the defaults a RUN step gets:
// Docker's default capability set, runc's default masked/readonly paths and kernel filesystem
// mounts, no terminal, an explicit cgroupsPath. run-step.ts fills in process, mounts and
// namespaces for one step; runc.ts runs the bundle.
import { readFileSync } from 'node:fs';

export interface SpecUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface SpecCapabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
  inheritable: string[];
  ambient: string[];
}

export interface SpecRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface SpecProcess {
  terminal: boolean;
  user: SpecUser;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: SpecCapabilities;
  rlimits: SpecRlimit[];
  noNewPrivileges: boolean;
}

export interface SpecMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface SpecNamespace {
  type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount' | 'user' | 'cgroup';
  path?: string;
}

export interface SpecDeviceRule {
  allow: boolean;
  access: string;
  type?: string;
  major?: number;
  minor?: number;
}

export interface SpecResources {
  devices: SpecDeviceRule[];
  memory?: { limit: number };
  pids?: { limit: number };
}

export interface SpecLinux {
  namespaces: SpecNamespace[];
  cgroupsPath: string;
  resources: SpecResources;
  maskedPaths: string[];
  readonlyPaths: string[];
}

export interface RuntimeSpec {
  ociVersion: string;
  process: SpecProcess;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: SpecMount[];
  linux: SpecLinux;
}

/** Docker's default capability set for containers (and BuildKit's for RUN without entitlements). */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** runc spec's defaults: kernel interfaces a build step has no business reading. */
export const DEFAULT_MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
];

export const DEFAULT_READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The kernel filesystems every step sees, as in `runc spec`. */
export function defaultMounts(): SpecMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  ];
}

export interface SpecInput {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
  user: SpecUser;
  hostname: string;
  /** Share the host's network namespace instead of a fresh one with only loopback. */
  hostNetwork: boolean;
  extraMounts: SpecMount[];
  cgroupsPath: string;
  memoryLimitBytes?: number;
  pidsLimit?: number;
  /** RLIMIT_NOFILE for the step; must not exceed the caller's hard limit (raising it needs CAP_SYS_RESOURCE). */
  nofile?: number;
}

/** The caller's hard RLIMIT_NOFILE capped at Docker's 1048576, or null if unknown. */
export function hostNofileLimit(limitsFile = '/proc/self/limits'): number | null {
  try {
    const line = readFileSync(limitsFile, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const hard = line?.trim().split(/\s+/)[4];
    if (hard === undefined) return null;
    return hard === 'unlimited' ? 1048576 : Math.min(1048576, Number(hard));
  } catch {
    return null;
  }
}

/** Builds the complete config.json for one RUN step. */
export function buildRuntimeSpec(input: SpecInput): RuntimeSpec {
  const env = [...input.env];
  if (!env.some((e) => e.startsWith('PATH='))) env.unshift(DEFAULT_PATH_ENV);
  const caps = [...DEFAULT_CAPABILITIES];
  const namespaces: SpecNamespace[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (!input.hostNetwork) namespaces.push({ type: 'network' });
  const resources: SpecResources = { devices: [{ allow: false, access: 'rwm' }] };
  if (input.memoryLimitBytes !== undefined) resources.memory = { limit: input.memoryLimitBytes };
  if (input.pidsLimit !== undefined) resources.pids = { limit: input.pidsLimit };
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: {
        uid: input.user.uid,
        gid: input.user.gid,
        ...(input.user.additionalGids?.length ? { additionalGids: input.user.additionalGids } : {}),
      },
      args: input.args,
      env,
      cwd: input.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: input.nofile ?? 1024, soft: input.nofile ?? 1024 }],
      noNewPrivileges: false,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    mounts: [...defaultMounts(), ...input.extraMounts],
    linux: {
      namespaces,
      cgroupsPath: input.cgroupsPath,
      resources,
      maskedPaths: DEFAULT_MASKED_PATHS,
      readonlyPaths: DEFAULT_READONLY_PATHS,
    },
  };
}
