// Content-addressed cache keys. A vertex's key is the digest of its op (with references to other vertices
// replaced by their position in `inputs`), the keys of its inputs, and the content digests of whatever it
// reads from outside the graph: the selected paths of a local context, or an HTTP file without checksum.
// The solver never reads files itself; it asks a ContentHasher, which the worker/server provides.
import { createHash } from 'node:crypto';
import { canonicalJson, topoOrder, type BuildGraph, type Op, type Vertex, type VertexId } from './ops.js';

/** What to hash: a source vertex and, for local dirs, the paths an op selects from it. */
export interface ContentRequest {
  source: Vertex;
  paths?: string[];
  excludes?: string[];
  followSymlinks?: boolean;
}

/** Returns a digest of the requested content (e.g. `sha256:...` over paths, modes and file bytes). */
export type ContentHasher = (req: ContentRequest) => Promise<string>;

/** Bumped whenever the key derivation changes, so old index entries stop matching. */
const KEY_VERSION = 1;

export async function computeCacheKeys(
  graph: BuildGraph,
  target: VertexId,
  hasher?: ContentHasher,
): Promise<Map<VertexId, string>> {
  const keys = new Map<VertexId, string>();
  for (const v of topoOrder(graph, target)) {
    const content = await contentDigests(graph, v, hasher);
    const material = {
      v: KEY_VERSION,
      op: opForKey(v.op, v.inputs),
      inputs: v.inputs.map((i) => keys.get(i)),
      content,
    };
    keys.set(v.id, 'sha256:' + createHash('sha256').update(canonicalJson(material)).digest('hex'));
  }
  return keys;
}

/** The op with vertex references turned into input positions, so keys depend on input keys, not ids. */
function opForKey(op: Op, inputs: VertexId[]): unknown {
  const ref = (id: VertexId | undefined): string | undefined => {
    if (id === undefined) return undefined;
    const i = inputs.indexOf(id);
    if (i < 0) throw new Error(`op refers to ${id}, which is not among its inputs`);
    return `#${i}`;
  };
  switch (op.kind) {
    case 'exec':
      return { ...op, rootfs: ref(op.rootfs), mounts: op.mounts.map((m) => ({ ...m, from: ref(m.from) })), proxyEnv: undefined };
    case 'file':
      return {
        ...op,
        base: ref(op.base),
        actions: op.actions.map((a) => (a.action === 'copy' ? { ...a, from: ref(a.from) } : a)),
      };
    default:
      return op;
  }
}

async function contentDigests(graph: BuildGraph, v: Vertex, hasher?: ContentHasher): Promise<string[]> {
  const reqs: ContentRequest[] = [];
  const op = v.op;
  if (op.kind === 'http' && !op.checksum) reqs.push({ source: v });
  if (op.kind === 'file') {
    for (const a of op.actions) {
      if (a.action !== 'copy') continue;
      const src = graph.vertices[a.from];
      if (src?.op.kind === 'local') {
        reqs.push({ source: src, paths: a.src, excludes: [...src.op.excludes, ...a.excludes], followSymlinks: a.followSymlinks });
      }
    }
  }
  if (op.kind === 'exec') {
    for (const m of op.mounts) {
      const src = m.from ? graph.vertices[m.from] : undefined;
      if (src?.op.kind === 'local') {
        reqs.push({ source: src, paths: [m.source ?? '/'], excludes: src.op.excludes, followSymlinks: true });
      }
    }
  }
  if (reqs.length === 0) return [];
  if (!hasher) {
    throw new Error(`vertex "${v.name}" reads external content but the solver has no content hasher`);
  }
  const out: string[] = [];
  for (const r of reqs) out.push(await hasher(r));
  return out;
}
