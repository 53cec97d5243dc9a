// Locates and runs the reference overlaybd command-line tools that tests use as an oracle.
// The tools live outside the repository: $OBDKIT_ORACLE_DIR, else ../shared/oracle next to the repo
// root. A missing oracle fails the calling test loudly unless OBDKIT_ALLOW_NO_ORACLE=1, in which case
// the test is skipped with the reason shown.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { execa } from 'execa';

/** Repository root (this file runs from dist/test/helpers/). */
export const repoRoot = resolve(fileURLToPath(new URL('../../../', import.meta.url)));

export function oracleDir(): string {
  return resolve(process.env.OBDKIT_ORACLE_DIR ?? join(repoRoot, '..', 'shared', 'oracle'));
}

const APT_HINT =
  'if the tools fail to start: apt-get install -y libaio1 libcurl4 libnl-3-200 libnl-genl-3-200 libyaml-cpp0.7 libzstd1 libssl3';

/**
 * Returns the oracle directory, or marks the test skipped (OBDKIT_ALLOW_NO_ORACLE=1) and returns null,
 * or throws with a clear message.
 */
export function requireOracle(t: TestContext): string | null {
  const dir = oracleDir();
  if (existsSync(join(dir, 'bin', 'overlaybd-zfile'))) return dir;
  const reason = `reference overlaybd tools not found in ${dir} (set OBDKIT_ORACLE_DIR)`;
  if (process.env.OBDKIT_ALLOW_NO_ORACLE === '1') {
    t.skip(reason);
    return null;
  }
  throw new Error(`${reason}; set OBDKIT_ALLOW_NO_ORACLE=1 to skip these tests instead`);
}

let libDir: string | undefined;

/**
 * Shared libraries shipped beside the tools may arrive with their symlinks flattened into small text
 * files naming the target; the loader then fails with "file too short". Recreate such links in a
 * temporary directory placed on LD_LIBRARY_PATH (searched before the binaries' RUNPATH).
 */
function libraryFixups(dir: string): string | undefined {
  if (libDir !== undefined) return libDir || undefined;
  libDir = '';
  const lib = join(dir, 'lib');
  if (!existsSync(lib)) return undefined;
  let made: string | undefined;
  for (const name of readdirSync(lib)) {
    const p = join(lib, name);
    const st = statSync(p);
    if (!st.isFile() || st.size > 255) continue;
    const target = readFileSync(p, 'latin1').trim();
    if (!/^[\w.+-]+$/.test(target) || !existsSync(join(lib, target))) continue;
    made ??= mkdtempSync(join(tmpdir(), 'obdkit-oracle-lib-'));
    symlinkSync(join(lib, target), join(made, name));
  }
  if (made) {
    const cleanup = made;
    process.once('exit', () => rmSync(cleanup, { recursive: true, force: true }));
  }
  libDir = made ?? '';
  return made;
}

export function oracleEnv(dir: string): NodeJS.ProcessEnv {
  const fix = libraryFixups(dir);
  const env: NodeJS.ProcessEnv = { ...process.env, OBD_ORACLE_BIN: join(dir, 'bin') };
  if (fix) env.LD_LIBRARY_PATH = process.env.LD_LIBRARY_PATH ? `${fix}:${process.env.LD_LIBRARY_PATH}` : fix;
  return env;
}

export interface OracleRun {
  exitCode: number;
  /** stdout and stderr interleaved (the tools log to both). */
  output: string;
}

/** Runs `bin/<tool> args…` from the oracle directory; never throws on a non-zero exit. */
export async function runOracleTool(dir: string, tool: string, args: string[], timeoutMs = 120_000): Promise<OracleRun> {
  const r = await execa(join(dir, 'bin', tool), args, {
    env: oracleEnv(dir), reject: false, all: true, timeout: timeoutMs, stdin: 'ignore',
  });
  const output = r.all ?? '';
  if (/error while loading shared libraries/.test(output)) {
    throw new Error(`${tool} failed to start: ${output.trim().split('\n').pop()}; ${APT_HINT}`);
  }
  return { exitCode: r.exitCode ?? -1, output };
}

export interface ObdCheckVerdict {
  result: 'VALID' | 'INVALID' | 'ERROR';
  reason: string;
  output: string;
}

/** `obd-check BLOB`: the reference tools' verdict on a layer blob as pushed to a registry. */
export async function obdCheck(dir: string, blob: string): Promise<ObdCheckVerdict> {
  const r = await execa(join(dir, 'obd-check'), [blob], {
    env: oracleEnv(dir), reject: false, all: true, timeout: 300_000, stdin: 'ignore',
  });
  const output = r.all ?? '';
  const m = /RESULT: (VALID|INVALID|ERROR) ?(.*)$/m.exec(output.trim().split('\n').pop() ?? '');
  if (!m) return { result: 'ERROR', reason: 'no RESULT line', output };
  return { result: m[1] as ObdCheckVerdict['result'], reason: m[2] ?? '', output };
}
