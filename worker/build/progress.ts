// Plain build progress, in the shape BuildKit's plain printer uses: each step gets a number the first
// time it shows up (`#3 [2/4] RUN make`), then its output lines as they come (`#3 0.412 ...`),
// `#3 CACHED`, `#3 DONE 1.2s` or `#3 ERROR: ...`; sealed layers add a line with the blob size and
// what deduplication dropped (describeLayer, the one wording the CLI and the server's status stream
// share). BuildProgress is what a build's printer offers; the redrawn terminal form is
// src/cli/progress-tty.ts.
import type { ProgressEvent } from '../../src/solver/solver.js';
import type { Vertex } from '../../src/solver/ops.js';
import type { SealOutcome } from '../commit/seal.js';

export function humanBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 2 : 1)}${units[u]}`;
}

/** One line (newline included) on a step's sealed layer, or on its absence. */
export function describeLayer(o: SealOutcome): string {
  const s = o.stats;
  const saved = `${humanBytes(s.identicalBytes)} unchanged of ${humanBytes(s.writtenBytes)} written, ${humanBytes(s.zeroedDroppedBytes)} of ${humanBytes(s.zeroedBytes)} discards over nothing`;
  return o.layer ? `layer ${o.layer.digest} ${humanBytes(o.layer.size)} (dropped ${saved})\n` : `no changes, no layer (dropped ${saved})\n`;
}

/** A build's progress printer, fed by the solver's events and the executor's sealed layers. */
export interface BuildProgress {
  event(e: ProgressEvent): void;
  layer(v: Vertex, o: SealOutcome): void;
  /** A line that belongs to no step (a warning); newline included. */
  message(text: string): void;
  /** Ends the output; `failed`: the build did not succeed. */
  close(failed?: boolean): void;
  /** Steps that ran (not cached) and steps answered from the cache, by vertex id. */
  readonly ran: Set<string>;
  readonly cached: Set<string>;
}

export class PlainProgress implements BuildProgress {
  private readonly numbers = new Map<string, number>();
  private readonly started = new Map<string, number>();
  private readonly partial = new Map<string, string>();
  private next = 1;
  /** Steps that ran (not cached) and steps answered from the cache, by vertex id. */
  readonly ran = new Set<string>();
  readonly cached = new Set<string>();

  constructor(private readonly write: (s: string) => void) {}

  private num(vertex: string, name: string): number {
    let n = this.numbers.get(vertex);
    if (n === undefined) {
      n = this.next++;
      this.numbers.set(vertex, n);
      this.write(`#${n} ${name}\n`);
    }
    return n;
  }

  event(e: ProgressEvent): void {
    const n = this.num(e.vertex, e.name);
    switch (e.type) {
      case 'started':
        this.started.set(e.vertex, e.time.getTime());
        break;
      case 'cached':
        this.cached.add(e.vertex);
        this.write(`#${n} CACHED\n`);
        break;
      case 'completed': {
        this.ran.add(e.vertex);
        this.flush(e.vertex, n, e.time);
        const t0 = this.started.get(e.vertex) ?? e.time.getTime();
        this.write(`#${n} DONE ${((e.time.getTime() - t0) / 1000).toFixed(1)}s\n`);
        break;
      }
      case 'error':
        this.flush(e.vertex, n, e.time);
        this.write(`#${n} ERROR: ${e.error}\n`);
        break;
      case 'log': {
        const text = (this.partial.get(e.vertex) ?? '') + Buffer.from(e.data).toString('utf8');
        const lines = text.split('\n');
        this.partial.set(e.vertex, lines.pop() ?? '');
        const t0 = this.started.get(e.vertex) ?? e.time.getTime();
        const at = ((e.time.getTime() - t0) / 1000).toFixed(3);
        for (const l of lines) this.write(`#${n} ${at} ${l}\n`);
        break;
      }
    }
  }

  layer(v: Vertex, o: SealOutcome): void {
    const n = this.num(v.id, v.name);
    this.write(`#${n} ${describeLayer(o)}`);
  }

  message(text: string): void {
    this.write(text);
  }

  close(): void {
    // Every line is out already.
  }

  private flush(vertex: string, n: number, time: Date): void {
    const rest = this.partial.get(vertex);
    if (rest) {
      const t0 = this.started.get(vertex) ?? time.getTime();
      this.write(`#${n} ${((time.getTime() - t0) / 1000).toFixed(3)} ${rest}\n`);
    }
    this.partial.delete(vertex);
  }
}
