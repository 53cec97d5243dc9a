// Build progress for a terminal, in the manner of buildx's tty display: at the bottom a block that is
// redrawn in place (cursor up, erase) with a header line, the running steps with their elapsed time
// and the last few lines of their output; above it, each step printed once when it ends, with its
// time or a CACHED mark, and the layer it sealed. Redraws are throttled to ten a second. The same
// events also feed a PlainProgress (worker/build/progress.ts) into memory: when the build fails,
// that full plain log is printed below the last frame, so the failing step's whole output is seen.
// progress.ts picks this or the plain printer from `--progress`.
import type { Writable } from 'node:stream';
import type { ProgressEvent } from '../solver/solver.js';
import type { Vertex } from '../solver/ops.js';
import type { SealOutcome } from '../../worker/commit/seal.js';
import { PlainProgress, describeLayer, type BuildProgress } from '../../worker/build/progress.js';

/** What the renderer needs of its output: a stream that may say it is a terminal and how wide. */
export type TtyStream = Writable & { isTTY?: boolean; columns?: number };

export interface TtyProgressOptions {
  /** Clock in ms (tests pass a fixed one). */
  now?: () => number;
  /** Output lines kept under a running step (default 6). */
  tailLines?: number;
  /** Minimum ms between redraws (default 100). */
  intervalMs?: number;
  /** The plain log kept for a failure is cut to its last this many bytes (default 4 MiB). */
  maxPlainBytes?: number;
}

const ESC = '\x1b[';

interface StepState {
  id: string;
  name: string;
  started?: number;
  ended?: number;
  cached: boolean;
  error?: string;
  tail: string[];
  partial: string;
  notes: string[];
  /** Printed above the live block already. */
  printed: boolean;
}

function seconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

export class TtyProgress implements BuildProgress {
  private readonly steps = new Map<string, StepState>();
  private readonly order: StepState[] = [];
  private readonly plain: PlainProgress;
  private plainLog: string[] = [];
  private plainBytes = 0;
  private plainDropped = false;
  private readonly pending: string[] = [];
  private liveLines = 0;
  private readonly t0: number;
  private readonly now: () => number;
  private readonly tailLines: number;
  private readonly intervalMs: number;
  private readonly maxPlainBytes: number;
  private lastDraw = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;
  get ran(): Set<string> {
    return this.plain.ran;
  }
  get cached(): Set<string> {
    return this.plain.cached;
  }

  constructor(private readonly out: TtyStream, opts: TtyProgressOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.tailLines = opts.tailLines ?? 6;
    this.intervalMs = opts.intervalMs ?? 100;
    this.maxPlainBytes = opts.maxPlainBytes ?? 4 << 20;
    this.t0 = this.now();
    this.plain = new PlainProgress((s) => this.keepPlain(s));
  }

  event(e: ProgressEvent): void {
    this.plain.event(e);
    const st = this.step(e.vertex, e.name);
    const at = e.time.getTime();
    switch (e.type) {
      case 'started':
        st.started ??= at;
        break;
      case 'cached':
        st.cached = true;
        st.ended = at;
        break;
      case 'completed':
        st.ended = at;
        break;
      case 'error':
        st.ended = at;
        st.error = e.error;
        break;
      case 'log': {
        const lines = (st.partial + Buffer.from(e.data).toString('utf8')).split('\n');
        st.partial = lines.pop() ?? '';
        st.tail.push(...lines);
        if (st.tail.length > this.tailLines) st.tail.splice(0, st.tail.length - this.tailLines);
        break;
      }
    }
    this.schedule();
  }

  layer(v: Vertex, o: SealOutcome): void {
    this.plain.layer(v, o);
    this.step(v.id, v.name).notes.push(describeLayer(o).trimEnd());
    this.schedule();
  }

  message(text: string): void {
    this.plain.message(text);
    for (const l of text.replace(/\n$/, '').split('\n')) this.pending.push(l);
    this.schedule();
  }

  /** Draws the last frame (no live block); after a failure prints the full plain log below it. */
  close(failed = false): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.ticker) clearInterval(this.ticker);
    this.timer = this.ticker = undefined;
    this.draw(true);
    if (failed) {
      const head = this.plainDropped ? '(earlier output left out)\n' : '';
      this.out.write(`------ build log ------\n${head}${this.plainLog.join('')}`);
    }
  }

  private keepPlain(s: string): void {
    this.plainLog.push(s);
    this.plainBytes += s.length;
    while (this.plainBytes > this.maxPlainBytes && this.plainLog.length > 1) {
      this.plainBytes -= this.plainLog.shift()!.length;
      this.plainDropped = true;
    }
  }

  private step(id: string, name: string): StepState {
    let st = this.steps.get(id);
    if (!st) {
      st = { id, name, cached: false, tail: [], partial: '', notes: [], printed: false };
      this.steps.set(id, st);
      this.order.push(st);
    }
    return st;
  }

  /** At most one redraw per interval; a ticker keeps elapsed times moving while steps run. */
  private schedule(): void {
    if (this.closed) return;
    if (!this.ticker) {
      this.ticker = setInterval(() => this.draw(false), Math.max(this.intervalMs, 100));
      this.ticker.unref();
    }
    if (this.timer) return;
    const wait = Math.max(0, this.lastDraw + this.intervalMs - this.now());
    if (wait === 0) {
      this.draw(false);
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.draw(false);
    }, wait);
    this.timer.unref();
  }

  private width(): number {
    const c = this.out.columns;
    return c && c > 20 ? c : 80;
  }

  /** `text` cut to the terminal width, with `right` (a time) flush right. */
  private fit(text: string, right = ''): string {
    const w = this.width() - 1;
    const room = right ? w - right.length - 1 : w;
    let t = text.replace(/[\r\t]/g, ' ').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    if (t.length > room) t = room > 1 ? `${t.slice(0, room - 1)}…` : t.slice(0, Math.max(0, room));
    return right ? `${t}${' '.repeat(Math.max(1, w - t.length - right.length))}${right}` : t;
  }

  private finishedLines(st: StepState): string[] {
    const lines: string[] = [];
    if (st.cached) lines.push(this.fit(` => CACHED ${st.name}`, seconds(0)));
    else if (st.error !== undefined) lines.push(this.fit(` => ERROR ${st.name}`, seconds((st.ended ?? 0) - (st.started ?? st.ended ?? 0))));
    else lines.push(this.fit(` => ${st.name}`, seconds((st.ended ?? 0) - (st.started ?? st.ended ?? 0))));
    for (const n of st.notes) lines.push(this.fit(` => => ${n}`));
    if (st.error !== undefined) {
      for (const l of [...st.tail, ...(st.partial ? [st.partial] : [])]) lines.push(this.fit(` => => # ${l}`));
      lines.push(this.fit(` => => ERROR: ${st.error}`));
    }
    return lines;
  }

  /** The text of one frame: lines printed for good, then the live block (empty on the last frame). */
  private frame(last: boolean): { permanent: string[]; live: string[] } {
    const permanent = this.pending.splice(0);
    for (const st of this.order) {
      if (st.printed || st.ended === undefined) continue;
      st.printed = true;
      permanent.push(...this.finishedLines(st));
    }
    const now = this.now();
    const done = this.order.filter((s) => s.ended !== undefined).length;
    const header = this.fit(`[+] Building ${seconds(now - this.t0)} (${done}/${this.order.length})${last ? ' FINISHED' : ''}`);
    if (last) return { permanent: [...permanent, header], live: [] };
    const live = [header];
    for (const st of this.order) {
      if (st.ended !== undefined || st.started === undefined) continue;
      live.push(this.fit(` => ${st.name}`, seconds(now - st.started)));
      const tail = [...st.tail, ...(st.partial ? [st.partial] : [])].slice(-this.tailLines);
      for (const l of tail) live.push(this.fit(` => => # ${l}`));
      for (const n of st.notes) live.push(this.fit(` => => ${n}`));
    }
    return { permanent, live };
  }

  private draw(last: boolean): void {
    this.lastDraw = this.now();
    const { permanent, live } = this.frame(last);
    let s = '';
    // Back to the top of the previous live block; what follows overwrites it line by line.
    if (this.liveLines > 0) s += `${ESC}${this.liveLines}A\r`;
    for (const l of [...permanent, ...live]) s += `${l}${ESC}K\n`;
    s += `${ESC}J`;
    this.liveLines = live.length;
    this.out.write(s);
  }
}
