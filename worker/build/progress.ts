// Plain build progress, in the shape BuildKit's plain printer uses: each step gets a number the first
// time it shows up (`#3 [2/4] RUN make`), then its output lines as they come (`#3 0.412 ...`),
// `#3 CACHED`, `#3 DONE 1.2s` or `#3 ERROR: ...`; sealed layers add a line with the blob size and
// what deduplication dropped. `tty` mode is the same text (no cursor movement).
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

export class PlainProgress {
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
    const s = o.stats;
    const saved = `${humanBytes(s.identicalBytes)} unchanged of ${humanBytes(s.writtenBytes)} written, ${humanBytes(s.zeroedDroppedBytes)} of ${humanBytes(s.zeroedBytes)} discards over nothing`;
    if (o.layer) this.write(`#${n} layer ${o.layer.digest} ${humanBytes(o.layer.size)} (dropped ${saved})\n`);
    else this.write(`#${n} no changes, no layer (dropped ${saved})\n`);
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
