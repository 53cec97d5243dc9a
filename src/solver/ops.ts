// The build graph: plain, JSON-serialisable op records that the frontend produces and the solver runs.
// A vertex is one op plus the vertices it reads from; its id is the digest of exactly that (op + input ids),
// so identical steps share an id wherever they come from. Names and source locations ride along for
// progress and errors but never change an id. `cache-key.ts` turns ids into content-aware cache keys,
// `solver.ts` schedules vertices, and `worker/` gives each op kind its meaning.
import { createHash } from 'node:crypto';
import type { HealthConfig } from '../oci/types.js';

export type VertexId = string;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** Where an op came from in its build definition; `line`/`endLine` are 1-based. */
export interface SourceLocation {
  file: string;
  line: number;
  endLine?: number;
}

/** An image from a registry (or the local store), pinned by digest whenever the frontend could resolve it. */
export interface SourceImageOp {
  kind: 'image';
  ref: string;
  platform: Platform;
}

/** The empty filesystem (`FROM scratch`, or the base of a stand-alone file). */
export interface ScratchOp {
  kind: 'scratch';
}

/**
 * A directory sent by the client (build context, named local contexts). Copies and bind mounts that select
 * paths from it are keyed by the content of those paths (the solver's ContentHasher), so the vertex itself
 * stands for "this local dir, with these excludes". The solver never answers it from the cache index: it
 * is transferred again whenever a step that reads it has to run.
 */
export interface LocalSourceOp {
  kind: 'local';
  name: string;
  excludes: string[];
}

/** A file fetched over HTTP(S) (ADD of a URL). With a checksum the content is pinned by it. */
export interface HttpSourceOp {
  kind: 'http';
  url: string;
  checksum?: string;
  filename?: string;
}

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';
export type NetworkMode = 'default' | 'none' | 'host';

export interface ExecMount {
  type: MountType;
  target: string;
  /** Path inside `from` (bind, cache) or nothing. */
  source?: string;
  /** Vertex whose result is mounted (bind from a stage/image/context, cache seed). Also listed in inputs. */
  from?: VertexId;
  readonly: boolean;
  /** Cache id, or secret id. */
  id?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  sharing?: CacheSharing;
  required?: boolean;
  /** tmpfs size in bytes. */
  size?: number;
  /** Secret exposed as an environment variable instead of a file. */
  env?: string;
}

export interface ExecOp {
  kind: 'exec';
  /** Vertex providing the root filesystem; also inputs[0]. */
  rootfs: VertexId;
  args: string[];
  env: string[];
  cwd: string;
  user: string;
  network: NetworkMode;
  mounts: ExecMount[];
  hostname?: string;
  /** Proxy variables are passed to the process but deliberately kept out of the cache key. */
  proxyEnv?: string[];
  extraHosts?: { host: string; ip: string }[];
}

export interface ChownOpt {
  user: string;
  group?: string;
}

export interface CopyAction {
  action: 'copy';
  /** Vertex the sources are read from (a stage, image, local context, http source or inline file). */
  from: VertexId;
  /** Source paths inside `from`; may hold globs (`*`, `?`, `[...]`). */
  src: string[];
  dest: string;
  chown?: ChownOpt;
  /** Octal (`0755`) or symbolic (`u+x`) mode, as written. */
  chmod?: string;
  link: boolean;
  parents: boolean;
  followSymlinks: boolean;
  /** Extra exclude patterns (`COPY --exclude`), dockerignore syntax. */
  excludes: string[];
  /** ADD of a local tar: extract archives (gzip/bzip2/xz/plain) instead of copying them. */
  unpack: boolean;
  /** Copy a directory's contents rather than the directory itself (Dockerfile semantics). */
  dirContents: boolean;
  allowWildcard: boolean;
  allowEmptyWildcard: boolean;
  createDestPath: boolean;
}

export interface MkdirAction {
  action: 'mkdir';
  path: string;
  mode: number;
  parents: boolean;
  chown?: ChownOpt;
}

export interface MkfileAction {
  action: 'mkfile';
  path: string;
  mode: number;
  data: string;
  chown?: ChownOpt;
}

export type FileAction = CopyAction | MkdirAction | MkfileAction;

/** Ordered file actions applied to `base` (or to an empty tree when base is absent). */
export interface FileOp {
  kind: 'file';
  base?: VertexId;
  actions: FileAction[];
}

export type Op = SourceImageOp | ScratchOp | LocalSourceOp | HttpSourceOp | ExecOp | FileOp;
export type OpKind = Op['kind'];

export interface Vertex {
  id: VertexId;
  op: Op;
  /** Every vertex this op reads, in a stable order (rootfs/base first). */
  inputs: VertexId[];
  /** The name progress displays, as BuildKit prints it: `[build 2/5] RUN make`. */
  name: string;
  location?: SourceLocation;
  /** Never reuse a cached result for this vertex (`--no-cache-filter`). */
  ignoreCache?: boolean;
}

export type { HealthConfig };

/** The runtime part of an OCI image config, with Docker's field names (what ends up in `config`). */
export interface ImageRuntimeConfig {
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string>;
  ExposedPorts?: Record<string, Record<string, never>>;
  Volumes?: Record<string, Record<string, never>>;
  Entrypoint?: string[];
  Cmd?: string[];
  Shell?: string[];
  Healthcheck?: HealthConfig;
  StopSignal?: string;
  OnBuild?: string[];
  ArgsEscaped?: boolean;
}

export interface HistoryEntry {
  created_by: string;
  comment?: string;
  empty_layer?: boolean;
}

/** An image config as the frontend tracks it per stage; `os`/`architecture` name the platform. */
export interface ImageConfig {
  os: string;
  architecture: string;
  variant?: string;
  author?: string;
  config: ImageRuntimeConfig;
  history: HistoryEntry[];
}

/** A graph: every vertex by id. Vertices only ever point at vertices in the same graph. */
export interface BuildGraph {
  vertices: Record<VertexId, Vertex>;
}

/** Op digest: the id of a vertex. Sorted-key JSON so the same op always hashes the same. */
export function vertexId(op: Op, inputs: VertexId[]): VertexId {
  return 'sha256:' + createHash('sha256').update(canonicalJson({ op, inputs })).digest('hex');
}

/** JSON with object keys sorted and undefined fields dropped: the byte form everything here is hashed in. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}

/** The vertices reachable from `target` (itself included), dependencies first. Iterative: graphs can be deep. */
export function topoOrder(graph: BuildGraph, target: VertexId): Vertex[] {
  const out: Vertex[] = [];
  const done = new Set<VertexId>();
  const onPath = new Set<VertexId>();
  const stack: { v: Vertex; next: number }[] = [];
  const push = (id: VertexId): void => {
    const v = graph.vertices[id];
    if (!v) throw new Error(`vertex ${id} is not in the graph`);
    if (onPath.has(id)) throw new Error(`cycle in build graph at ${id}`);
    onPath.add(id);
    stack.push({ v, next: 0 });
  };
  push(target);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    if (top.next < top.v.inputs.length) {
      const id = top.v.inputs[top.next++]!;
      if (!done.has(id)) push(id);
      continue;
    }
    stack.pop();
    onPath.delete(top.v.id);
    done.add(top.v.id);
    out.push(top.v);
  }
  return out;
}
