// Locates and runs the real BuildKit clients (buildctl, docker-buildx) used by the server tests, and
// builds the fixture trees they send. Clients come from OBDKIT_PEER_DIR (default: the peer tools directory
// beside the repository).
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, link, lstat, mkdir, readdir, readlink, symlink, utimes, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';

const repoRoot = new URL('../../../', import.meta.url).pathname;
export const peerDir = process.env.OBDKIT_PEER_DIR ?? join(repoRoot, '../shared/peer');
export const buildctlBin = join(peerDir, 'bin/buildctl');
export const buildxBin = join(peerDir, 'bin/docker-buildx');

export function assertPeerClients(): void {
  for (const p of [buildctlBin, buildxBin]) {
    if (!existsSync(p)) throw new Error(`BuildKit client not found at ${p}; set OBDKIT_PEER_DIR`);
  }
}

export interface RunResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

/** Runs a client to completion; never rejects on a non-zero exit. */
export async function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const r = await execa(bin, args, { reject: false, env: { ...env }, timeout: 180_000, stdin: 'ignore' });
  return { exitCode: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Starts a client without waiting for it (for cancellation tests). */
export function spawnClient(bin: string, args: string[], env: Record<string, string> = {}): ResultPromise {
  return execa(bin, args, { reject: false, env: { ...env }, stdin: 'ignore' });
}

export const BIG_FILE_SIZE = 50 * 1024 * 1024;

/** A context exercising what the transfer must preserve: modes, symlinks, hardlinks, mtimes, a big file. */
export async function makeContextTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'sub/deep/nested'), { recursive: true });
  await mkdir(join(dir, 'bin'), { recursive: true });
  await mkdir(join(dir, 'empty-dir'), { recursive: true });
  await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /app\nRUN echo hi\n');
  await writeFile(join(dir, 'sub/a.txt'), 'hello a\n');
  await writeFile(join(dir, 'sub/deep/nested/x.json'), '{"x":1}\n');
  await writeFile(join(dir, 'bin/run.sh'), '#!/bin/sh\necho run\n');
  await chmod(join(dir, 'bin/run.sh'), 0o755);
  await writeFile(join(dir, 'private.key'), 'secret-ish\n');
  await chmod(join(dir, 'private.key'), 0o600);
  await writeFile(join(dir, 'setuid-tool'), 'tool\n');
  await chmod(join(dir, 'setuid-tool'), 0o4755);
  await writeFile(join(dir, 'empty'), '');
  await writeFile(join(dir, 'naïve ünïcode.txt'), 'unicode name\n');
  await symlink('sub/a.txt', join(dir, 'link-to-a'));
  await symlink('does/not/exist', join(dir, 'dangling'));
  await symlink('sub', join(dir, 'link-to-dir'));
  await link(join(dir, 'sub/a.txt'), join(dir, 'hardlink-to-a'));
  const fh = await open(join(dir, 'big.bin'), 'w');
  try {
    const block = randomBytes(1 << 20);
    for (let i = 0; i < BIG_FILE_SIZE >> 20; i++) {
      block.writeUInt32LE(i, 0);
      await fh.write(block);
    }
  } finally {
    await fh.close();
  }
  const t = new Date('2021-03-04T05:06:07.250Z');
  await utimes(join(dir, 'sub/a.txt'), t, t);
  await utimes(join(dir, 'bin/run.sh'), t, t);
  await utimes(join(dir, 'sub/deep'), t, t);
}

export interface TreeEntry {
  type: 'dir' | 'file' | 'symlink' | 'other';
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
  mtimeMs?: number;
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Everything under `dir` that a transfer must reproduce, keyed by relative path. */
export async function describeTree(dir: string, opts: { mtimes?: boolean } = {}): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(dir, r);
      const st = await lstat(abs);
      const mode = st.mode & 0o7777;
      const mt = opts.mtimes ? { mtimeMs: Math.floor(st.mtimeMs) } : {};
      if (st.isSymbolicLink()) out[r] = { type: 'symlink', mode: 0, target: await readlink(abs) };
      else if (st.isDirectory()) {
        out[r] = { type: 'dir', mode, ...(opts.mtimes && r !== '' ? mt : {}) };
        await walk(r);
      } else if (st.isFile()) out[r] = { type: 'file', mode, size: st.size, sha256: await sha256File(abs), ...mt };
      else out[r] = { type: 'other', mode };
    }
  };
  await walk('');
  return out;
}
