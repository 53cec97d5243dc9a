// Drives the runc binary for one bundle: `runc run` in the foreground with stdout/stderr split into
// lines for a callback, cancellation by AbortSignal (`runc kill`, then `runc delete --force`), and a
// container that is always deleted afterwards. The bundle itself is prepared by run-step.ts.
import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { execa } from 'execa';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';

export type OutputStream = 'stdout' | 'stderr';
export type OutputCallback = (stream: OutputStream, line: string) => void;

export interface RuncOptions {
  /** runc binary, default `runc` from PATH. */
  runc?: string;
  /** runc state directory (`--root`); default is runc's own (/run/runc for root). */
  root?: string;
}

export interface RuncRunOptions extends RuncOptions {
  id: string;
  bundle: string;
  onOutput?: OutputCallback;
  signal?: AbortSignal;
  /** How many trailing output lines to keep for error messages. */
  tailLines?: number;
}

export interface RuncResult {
  exitCode: number;
  /** The last lines of combined output, oldest first. */
  tail: string[];
  cancelled: boolean;
}

function globalArgs(o: RuncOptions): string[] {
  return o.root ? ['--root', o.root] : [];
}

const MAX_LINE = 64 * 1024;

/** Splits a byte stream into lines, keeping a partial last line until more arrives or the end. */
class LineSplitter {
  private partial = '';
  // A multi-byte character split across two chunks must not turn into replacement characters.
  private readonly decoder = new StringDecoder('utf8');
  constructor(private readonly emit: (line: string) => void) {}
  push(chunk: Buffer): void {
    const text = this.partial + this.decoder.write(chunk);
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const l of lines) this.emit(l.endsWith('\r') ? l.slice(0, -1) : l);
    // Output without newlines (progress bars, binary) must not grow without bound.
    if (this.partial.length > MAX_LINE) {
      this.emit(this.partial);
      this.partial = '';
    }
  }
  end(): void {
    this.partial += this.decoder.end();
    if (this.partial !== '') this.emit(this.partial);
    this.partial = '';
  }
}

/**
 * Runs the container to completion. Resolves with its exit code (128+signal when killed) — a
 * non-zero exit is not an error here; the caller decides. Rejects only if runc cannot be started.
 */
export async function runcRun(opts: RuncRunOptions): Promise<RuncResult> {
  const tailMax = opts.tailLines ?? 20;
  const tail: string[] = [];
  const record = (stream: OutputStream) => (line: string) => {
    tail.push(line);
    if (tail.length > tailMax) tail.shift();
    try {
      opts.onOutput?.(stream, line);
    } catch (err) {
      // A faulty progress consumer must not take the daemon down or leave the container running.
      log.warn({ err, container: opts.id }, 'output callback threw');
    }
  };
  if (opts.signal?.aborted) return { exitCode: 137, tail, cancelled: true };
  // stdin is closed and only the two pipes are passed: no other descriptor of ours reaches the
  // container (node opens everything O_CLOEXEC), which is what CVE-2024-21626 was about.
  const child = spawn(opts.runc ?? 'runc', [...globalArgs(opts), 'run', '--bundle', opts.bundle, opts.id], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = new LineSplitter(record('stdout'));
  const err = new LineSplitter(record('stderr'));
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));

  let cancelled = false;
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    cancelled = true;
    // The container may not exist yet when the abort arrives; keep trying until runc exits.
    const attempt = (): void => {
      void runcKill(opts, opts.id).finally(() => {
        if (child.exitCode === null && child.signalCode === null) killTimer = setTimeout(attempt, 100);
      });
    };
    attempt();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    const exitCode = await new Promise<number>((resolve, reject) => {
      child.once('error', (e) =>
        reject(new ObdkitError('ERUNC', `cannot start runc: ${e.message}`, { runc: opts.runc ?? 'runc' }, { cause: e })),
      );
      child.once('close', (code, sig) => {
        out.end();
        err.end();
        resolve(code ?? 128 + signalNumber(sig));
      });
    });
    return { exitCode, tail, cancelled };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (killTimer) clearTimeout(killTimer);
    await runcDelete(opts, opts.id);
  }
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig === 'SIGKILL' ? 9 : sig === 'SIGTERM' ? 15 : sig === 'SIGINT' ? 2 : 1;
}

/** Sends SIGKILL to the container; returns false if runc refused (e.g. it does not exist yet). */
export async function runcKill(o: RuncOptions, id: string): Promise<boolean> {
  const r = await execa(o.runc ?? 'runc', [...globalArgs(o), 'kill', id, 'KILL'], { reject: false });
  return r.exitCode === 0;
}

/** Deletes the container whatever its state; a container that is already gone is fine. */
export async function runcDelete(o: RuncOptions, id: string): Promise<void> {
  const r = await execa(o.runc ?? 'runc', [...globalArgs(o), 'delete', '--force', id], { reject: false });
  if (r.exitCode !== 0 && !/does not exist|not found/i.test(String(r.stderr))) {
    throw new ObdkitError('ERUNC', `runc delete failed: ${String(r.stderr).trim()}`, { container: id });
  }
}

/** Ids of the containers runc knows about under this root. */
export async function runcList(o: RuncOptions = {}): Promise<string[]> {
  const r = await execa(o.runc ?? 'runc', [...globalArgs(o), 'list', '--format', 'json'], { reject: false });
  if (r.exitCode !== 0) return [];
  const text = String(r.stdout).trim();
  if (text === '' || text === 'null') return [];
  const parsed = JSON.parse(text) as Array<{ id: string }> | null;
  return (parsed ?? []).map((c) => c.id);
}
