// Build progress as Control.Status streams it. A JobProgress records every update of one build (vertexes,
// statuses, logs, warnings), fans them out to live Status subscribers and replays them to late ones, and
// ends all streams when the build ends. Vertex updates always carry the full record, since clients
// replace what they stored rather than merging.
import { createHash } from 'node:crypto';
import type { StatusResponse, Vertex, VertexStatus } from './gen/buildkit/control.js';

/** Logs are split so one StatusResponse stays well under the clients' message limits. */
const MAX_LOG_CHUNK = 512 << 10;

export interface VertexHandle {
  readonly digest: string;
  /** Appends output (stream 1 = stdout, 2 = stderr). */
  log(data: string | Uint8Array, stream?: 1 | 2): void;
  /** A progress line inside the vertex, e.g. `transferring context:` with byte counts. */
  status(id: string, current: number | bigint, total?: number | bigint, done?: boolean): void;
  warn(short: string, detail?: string[], url?: string): void;
  /** Ends the vertex: DONE, or ERROR with the message. */
  complete(error?: string): void;
  /** Ends the vertex as CACHED. */
  cached(): void;
}

export interface ProgressSink {
  /** Starts a vertex named `name` (what clients print after `#N`). */
  vertex(name: string, opts?: { inputs?: string[]; digest?: string }): VertexHandle;
  /** Raw updates, for pipelines that track vertexes themselves. */
  write(update: Partial<StatusResponse>): void;
}

type Listener = (update: StatusResponse | null) => void;

function emptyUpdate(): StatusResponse {
  return { vertexes: [], statuses: [], logs: [], warnings: [] };
}

export class JobProgress implements ProgressSink {
  private readonly history: StatusResponse[] = [];
  private readonly listeners = new Set<Listener>();
  private readonly open = new Map<string, Vertex>();
  private counter = 0;
  private ended = false;

  constructor(private readonly ref: string) {}

  get isEnded(): boolean {
    return this.ended;
  }

  write(partial: Partial<StatusResponse>): void {
    if (this.ended) return;
    const update: StatusResponse = { ...emptyUpdate(), ...partial };
    this.history.push(update);
    for (const l of this.listeners) l(update);
  }

  vertex(name: string, opts: { inputs?: string[]; digest?: string } = {}): VertexHandle {
    const digest =
      opts.digest ?? `sha256:${createHash('sha256').update(`${this.ref}\0${this.counter++}\0${name}`).digest('hex')}`;
    const v: Vertex = { digest, inputs: opts.inputs ?? [], name, cached: false, started: new Date(), error: '' };
    this.open.set(digest, v);
    this.write({ vertexes: [{ ...v }] });
    const statuses = new Map<string, VertexStatus>();
    const finish = (mut: (v: Vertex) => void) => {
      if (!this.open.has(digest)) return;
      // Close open status lines first: clients wait for them before printing DONE.
      const now = new Date();
      const closing = [...statuses.values()].filter((s) => s.completed === undefined);
      for (const s of closing) {
        s.completed = now;
        s.timestamp = now;
      }
      if (closing.length) this.write({ statuses: closing.map((s) => ({ ...s })) });
      mut(v);
      v.completed = now;
      this.open.delete(digest);
      this.write({ vertexes: [{ ...v }] });
    };
    return {
      digest,
      log: (data, stream = 1) => {
        const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.length);
        for (let off = 0; off < buf.length || off === 0; off += MAX_LOG_CHUNK) {
          this.write({ logs: [{ vertex: digest, timestamp: new Date(), stream: BigInt(stream), msg: buf.subarray(off, off + MAX_LOG_CHUNK) }] });
          if (buf.length === 0) break;
        }
      },
      status: (id, current, total = 0, done = false) => {
        const now = new Date();
        let s = statuses.get(id);
        if (!s) {
          s = { ID: id, vertex: digest, name: id, current: 0n, total: 0n, timestamp: now, started: now };
          statuses.set(id, s);
        }
        s.current = BigInt(current);
        s.total = BigInt(total);
        s.timestamp = now;
        if (done) s.completed = now;
        this.write({ statuses: [{ ...s }] });
      },
      warn: (short, detail = [], url = '') => {
        this.write({
          warnings: [{ vertex: digest, level: 1n, short: Buffer.from(short), detail: detail.map((d) => Buffer.from(d)), url, ranges: [] }],
        });
      },
      complete: (error) =>
        finish((vx) => {
          vx.error = error ?? '';
        }),
      cached: () =>
        finish((vx) => {
          vx.cached = true;
        }),
    };
  }

  /** Replays what happened so far, then follows live updates; `null` marks the end. */
  subscribe(listener: Listener): () => void {
    for (const u of this.history) listener(u);
    if (this.ended) {
      listener(null);
      return () => undefined;
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Ends the build's progress; vertexes still open are closed (with `error` when given). */
  end(error?: string): void {
    if (this.ended) return;
    const now = new Date();
    const left = [...this.open.values()].map((v) => ({ ...v, completed: now, error: v.error || (error ?? '') }));
    this.open.clear();
    if (left.length) this.write({ vertexes: left });
    this.ended = true;
    for (const l of this.listeners) l(null);
    this.listeners.clear();
  }
}
