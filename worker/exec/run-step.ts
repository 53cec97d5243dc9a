// One RUN step: a runc bundle over a rootfs directory (the mounted ext4 of the step's writable
// device), with the user, working directory, hostname, /etc/hosts, /etc/resolv.conf and the
// RUN --mount list turned into an OCI runtime spec (runtime-spec.ts), run by runc.ts. Everything
// the step needs besides the rootfs lives in a bundle directory under the state root, removed
// afterwards; mount points runc had to create in the rootfs are removed again so they do not end
// up in the layer.
//
// Network: BuildKit's default is a sandbox namespace wired up by CNI. This machine has no CNI
// and runc's fresh namespace has no route out, so the default here is `host` (share the host's
// network namespace, like BuildKit's `--oci-worker-net=host`); `none` gives a namespace with
// only loopback.
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { execa } from 'execa';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';
import { isUnder, mkdirAllInRoot, resolveInRoot, resolveRelative } from './root-path.js';
import { resolveUser } from './user-db.js';
import { buildRuntimeSpec, hostNofileLimit, type SpecMount } from './runtime-spec.js';
import { runcRun, type OutputCallback, type RuncOptions } from './runc.js';
import { copyFilesInWorker } from './copy-worker.js';

/** `default` is what a Dockerfile RUN gets without --network; here it means `host` (see above). */
export type NetworkMode = 'default' | 'host' | 'none';

export interface BindMount {
  type: 'bind';
  target: string;
  /** Host directory the mount comes from: the build context or another stage's rootfs. */
  source: string;
  /** Path inside `source`, resolved without leaving it. */
  subpath?: string;
  /** Default true. A writable bind sees an overlay whose writes are thrown away after the step. */
  readonly?: boolean;
}

export interface CacheMount {
  type: 'cache';
  target: string;
  /** Cache identity; the same id in later steps sees the same directory. */
  id: string;
  /** Directory inside the cache to mount (`source=`), resolved without leaving the cache. */
  subpath?: string;
  readonly?: boolean;
  /** `shared` (default) lets concurrent steps use the directory; `locked`/`private` serialise them. */
  sharing?: 'shared' | 'locked' | 'private';
  uid?: number;
  gid?: number;
  mode?: number;
  /**
   * `from=`: a new cache starts as a copy of this host directory (the `source=` path of another
   * stage or image, already resolved). Such a cache is its own, apart from the unseeded cache of the
   * same id: `key` names what it was seeded from.
   */
  seed?: { dir: string; key: string };
}

export interface TmpfsMount {
  type: 'tmpfs';
  target: string;
  sizeBytes?: number;
}

export interface SecretMount {
  type: 'secret';
  id: string;
  /** Default /run/secrets/<id>, unless `env` is set: then a file only if a target is given. */
  target?: string;
  /** Also (or only) expose the secret as this environment variable. */
  env?: string;
  data: Buffer;
  uid?: number;
  gid?: number;
  /** Default 0o400. */
  mode?: number;
}

export type RunMount = BindMount | CacheMount | TmpfsMount | SecretMount;

export interface RunStepOptions extends RuncOptions {
  /** The rootfs directory (a mounted filesystem). */
  rootfs: string;
  /** Where bundles and cache mounts live. */
  stateRoot: string;
  args: string[];
  env?: string[];
  /** Working directory inside the rootfs, created if missing. Default `/`. */
  cwd?: string;
  /** USER spec: name, uid, name:group, uid:gid. Default root. */
  user?: string;
  hostname?: string;
  network?: NetworkMode;
  extraHosts?: Array<{ host: string; ip: string }>;
  mounts?: RunMount[];
  memoryLimitBytes?: number;
  pidsLimit?: number;
  onOutput?: OutputCallback;
  signal?: AbortSignal;
  /** Parent of the per-container cgroup; must lie outside the block daemon's cgroup. */
  cgroupParent?: string;
}

export const DEFAULT_HOSTNAME = 'buildkitsandbox';
export const DEFAULT_CGROUP_PARENT = '/obdkit';

/** Kernel filesystems mounted over the rootfs; a working directory in them would leave the rootfs. */
const KERNEL_MOUNTS = ['/proc', '/sys', '/dev'];

export interface RunStepResult {
  /** Trailing lines of output, for progress display. */
  tail: string[];
}

/** Runs one step to completion; throws ObdkitError EEXEC on a non-zero exit, ECANCELED on abort. */
export async function runStep(opts: RunStepOptions): Promise<RunStepResult> {
  if (opts.args.length === 0) throw new ObdkitError('EEXEC', 'RUN step has no command');
  const id = `obdkit-${randomUUID()}`;
  const bundle = join(opts.stateRoot, 'bundles', id);
  mkdirSync(bundle, { recursive: true, mode: 0o700 });
  const overlays: string[] = [];
  const stubs = new Set<string>();
  const releases: Array<() => void> = [];
  try {
    const user = resolveUser(opts.rootfs, opts.user);
    const cwd = prepareWorkdir(opts.rootfs, opts.cwd ?? '/', user.uid, user.gid);
    const hostname = opts.hostname ?? DEFAULT_HOSTNAME;
    const network = opts.network === 'none' ? 'none' : 'host';
    const env = [...(opts.env ?? [])];

    const mounts: SpecMount[] = [];
    writeFileSync(join(bundle, 'hosts'), hostsFile(hostname, opts.extraHosts ?? []), { mode: 0o644 });
    writeFileSync(join(bundle, 'resolv.conf'), resolvConf(), { mode: 0o644 });
    mounts.push(bindSpec('/etc/hosts', join(bundle, 'hosts'), true));
    mounts.push(bindSpec('/etc/resolv.conf', join(bundle, 'resolv.conf'), true));
    let n = 0;
    for (const m of opts.mounts ?? []) {
      n++;
      if (m.type === 'secret' && m.env !== undefined) {
        env.push(`${m.env}=${m.data.toString('utf8')}`);
        if (m.target === undefined) continue;
      }
      const spec = await mountSpec(m, n, bundle, opts.stateRoot, overlays, releases);
      // runc wants absolute, clean destinations; the frontend has already joined relative ones to the workdir.
      spec.destination = posix.normalize('/' + spec.destination);
      mounts.push(spec);
    }

    for (const dest of ['/proc', '/dev', '/sys', ...mounts.map((m) => m.destination)]) {
      const stub = firstMissing(opts.rootfs, dest);
      if (stub !== null) stubs.add(stub);
    }

    const spec = buildRuntimeSpec({
      rootfs: opts.rootfs,
      args: opts.args,
      env,
      cwd,
      user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
      hostname,
      hostNetwork: network === 'host',
      extraMounts: mounts,
      cgroupsPath: `${opts.cgroupParent ?? DEFAULT_CGROUP_PARENT}/${id}`,
      ...(opts.memoryLimitBytes !== undefined ? { memoryLimitBytes: opts.memoryLimitBytes } : {}),
      ...(opts.pidsLimit !== undefined ? { pidsLimit: opts.pidsLimit } : {}),
      nofile: hostNofileLimit() ?? 1024,
    });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 2), { mode: 0o600 });

    const r = await runcRun({
      id,
      bundle,
      ...(opts.runc !== undefined ? { runc: opts.runc } : {}),
      ...(opts.root !== undefined ? { root: opts.root } : {}),
      ...(opts.onOutput !== undefined ? { onOutput: opts.onOutput } : {}),
      ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
    });
    const command = opts.args.join(' ');
    if (r.cancelled) throw new ObdkitError('ECANCELED', `RUN ${command}: cancelled`, { command });
    if (r.exitCode !== 0) {
      const last = r.tail.length ? `\n${r.tail.join('\n')}` : '';
      throw new ObdkitError(
        'EEXEC',
        `process "${command}" did not complete successfully: exit code: ${r.exitCode}${last}`,
        { command, exitCode: r.exitCode, output: r.tail.join('\n') },
      );
    }
    return { tail: r.tail };
  } finally {
    for (const release of releases) release();
    for (const dir of overlays) await execa('umount', [dir], { reject: false });
    // Deepest first, so a stub inside another stub goes before its parent.
    for (const s of [...stubs].sort((a, b) => b.length - a.length)) removeStub(s);
    rmSync(bundle, { recursive: true, force: true });
  }
}

/**
 * Validates and creates the working directory inside the rootfs. Returns the resolved in-container
 * path, which holds no symlinks, so runc cannot be led elsewhere by the one we were given.
 */
export function prepareWorkdir(rootfs: string, cwd: string, uid: number, gid: number): string {
  const lexical = posix.normalize('/' + cwd);
  const resolved = '/' + resolveRelative(rootfs, lexical);
  for (const k of KERNEL_MOUNTS) {
    if (isUnder(lexical, k) || isUnder(resolved, k)) {
      throw new ObdkitError('EWORKDIR', `working directory ${cwd} lies in the container's ${k} mount`, { cwd });
    }
  }
  mkdirAllInRoot(rootfs, resolved, { uid, gid });
  return resolved;
}

function bindSpec(destination: string, source: string, readonly: boolean): SpecMount {
  return { destination, type: 'bind', source, options: ['rbind', readonly ? 'ro' : 'rw', 'nosuid', 'nodev'] };
}

const cacheLocks = new Map<string, Promise<void>>();

/** Serialises holders of one key in this process; returns the release function. */
async function lock(key: string): Promise<() => void> {
  const prev = cacheLocks.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const chained = prev.then(() => mine);
  cacheLocks.set(key, chained);
  await prev;
  return () => {
    release();
    if (cacheLocks.get(key) === chained) cacheLocks.delete(key);
  };
}

async function mountSpec(
  m: RunMount,
  n: number,
  bundle: string,
  stateRoot: string,
  overlays: string[],
  releases: Array<() => void>,
): Promise<SpecMount> {
  switch (m.type) {
    case 'bind': {
      const src = m.subpath ? resolveInRoot(m.source, m.subpath) : m.source;
      statSync(src);
      if (m.readonly ?? true) return bindSpec(m.target, src, true);
      // Writes to a bind mount must not reach the other stage's rootfs or the context.
      if (/[,:\\]/.test(src)) throw new ObdkitError('EMOUNT', 'writable bind source path contains , : or \\', { file: src });
      const base = join(bundle, `bind-${n}`);
      for (const d of ['upper', 'work', 'merged']) mkdirSync(join(base, d), { recursive: true });
      const merged = join(base, 'merged');
      await execa('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${src},upperdir=${join(base, 'upper')},workdir=${join(base, 'work')}`, merged]);
      overlays.push(merged);
      return bindSpec(m.target, merged, false);
    }
    case 'cache': {
      const key = createHash('sha256').update(m.seed ? `${m.id}\0${m.seed.key}` : m.id).digest('hex');
      const dir = join(stateRoot, 'cache', key);
      if ((m.sharing ?? 'shared') !== 'shared') releases.push(await lock(key));
      mkdirSync(join(stateRoot, 'cache'), { recursive: true, mode: 0o700 });
      if (m.seed) {
        await seedCache(dir, m.seed.dir);
      } else {
        try {
          mkdirSync(dir, { mode: m.mode ?? 0o755 });
          chmodSync(dir, m.mode ?? 0o755);
          chownSync(dir, m.uid ?? 0, m.gid ?? 0);
        } catch (err) {
          if (errnoCode(err) !== 'EEXIST') throw err;
        }
      }
      // Earlier steps control the cache's content, symlinks included: resolve inside it (CVE-2024-23651 class).
      const src = m.subpath && !m.seed ? mkdirAllInRoot(dir, m.subpath, { uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o755 }) : dir;
      return bindSpec(m.target, src, m.readonly ?? false);
    }
    case 'tmpfs': {
      const options = ['nosuid', 'nodev', 'mode=1777'];
      if (m.sizeBytes !== undefined) options.push(`size=${m.sizeBytes}`);
      return { destination: m.target, type: 'tmpfs', source: 'tmpfs', options };
    }
    case 'secret': {
      // The secret lives in the bundle (outside the rootfs) and is bind-mounted read-only.
      mkdirSync(join(bundle, 'secrets'), { mode: 0o700, recursive: true });
      const file = join(bundle, 'secrets', `${n}`);
      writeFileSync(file, m.data, { mode: 0o600 });
      chownSync(file, m.uid ?? 0, m.gid ?? 0);
      chmodSync(file, m.mode ?? 0o400);
      const target = m.target ?? `/run/secrets/${m.id}`;
      return { destination: target, type: 'bind', source: file, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] };
    }
  }
}

function hostsFile(hostname: string, extra: Array<{ host: string; ip: string }>): string {
  const lines = [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    `127.0.0.1\t${hostname}`,
    ...extra.map((e) => `${e.ip}\t${e.host}`),
  ];
  return lines.join('\n') + '\n';
}

function resolvConf(): string {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    return 'nameserver 8.8.8.8\n';
  }
}

/** The host path of the first component of `dest` that does not exist in the rootfs, or null. */
function firstMissing(rootfs: string, dest: string): string | null {
  const rel = resolveRelative(rootfs, dest);
  let cur = rootfs;
  for (const c of rel.split('/').filter((x) => x !== '')) {
    cur = join(cur, c);
    try {
      lstatSync(cur);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return cur;
      return null;
    }
  }
  return null;
}

/** Removes a mount point runc created, only if it is still an empty file or a tree of empty dirs. */
function removeStub(path: string): boolean {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return true;
  }
  if (st.isFile() && st.size === 0) {
    unlinkSync(path);
    return true;
  }
  if (!st.isDirectory()) return false;
  let empty = true;
  for (const name of readdirSync(path)) if (!removeStub(join(path, name))) empty = false;
  if (!empty) return false;
  rmdirSync(path);
  return true;
}

/**
 * Makes a seeded cache directory once: a copy of `from` (owners, modes, links, xattrs kept; COPY's own
 * machinery, on its worker thread, since `from` may be a device this process serves) built aside and
 * renamed into place, so a step never sees a half-copied cache.
 */
async function seedCache(dir: string, from: string): Promise<void> {
  try {
    lstatSync(dir);
    return;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  const tmp = `${dir}.seed-${randomUUID()}`;
  try {
    mkdirSync(tmp, { mode: 0o755 });
    await copyFilesInWorker({ srcRoot: from, sources: ['/'], destRoot: tmp, dest: '/', preserveOwnership: true });
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Seeded meanwhile by a concurrent step: theirs stays.
      if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'EEXIST') throw err;
    }
  } catch (err) {
    if (err instanceof ObdkitError) throw err;
    throw new ObdkitError('ECACHE', `seeding the cache mount failed: ${err instanceof Error ? err.message : String(err)}`, { file: from }, { cause: err });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
