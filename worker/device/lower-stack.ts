// Stacks the lower layer blobs of a device into one LowerView: each blob is unwrapped by content
// (tar → ZFile → LSMT, src/overlaybd/layer-open.ts), opened as a sealed layer, and its records are
// overlaid bottom to top into one SegmentIndex, so for every sector the newest layer that has a record
// (data or zeroed) wins; the record's tag says which layer file to read. Opened once per worker
// thread: ZFile readers keep per-thread block caches.
import { FormatError, ObdkitError } from '../../src/util/errors.js';
import { openSealedLayer, type SealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { SegmentIndex } from '../../src/overlaybd/segment-index.js';
import { MessageChannel, Worker } from 'node:worker_threads';
import { localLowerSource, type LowerSource, type LowerSpec, type LowerView } from './lower-source.js';
import { serveRemoteReads, type RemoteFetcher } from './remote-channel.js';
import { SECTOR } from './rw-pair.js';

/** overlaybd's MAX_STACK_LAYERS. */
export const MAX_LOWERS = 255;

class StackedLowers implements LowerView {
  readonly virtualSize: number;
  private readonly index = new SegmentIndex();

  constructor(
    private readonly layers: SealedLayer[],
    private readonly closers: Array<() => void>,
  ) {
    layers.forEach((l, tag) => {
      for (const m of l.records) this.index.insert({ ...m, tag });
    });
    let v = 0;
    for (let i = layers.length - 1; i >= 0 && v === 0; i--) v = layers[i]!.virtualSize;
    this.virtualSize = v;
  }

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (const p of this.index.lookup(offset / SECTOR, length / SECTOR)) {
      if (p.zeroed) continue;
      const layer = this.layers[p.tag]!;
      const bytes = p.length * SECTOR;
      const got = layer.data.pread(p.moffset * SECTOR, bytes);
      if (got.length !== bytes) {
        throw new FormatError(`lower layer ${p.tag} maps sectors past the end of its file`, { file: layer.data.name, offset: p.moffset * SECTOR + got.length });
      }
      got.copy(out, p.offset * SECTOR - offset);
    }
    return out;
  }

  close(): void {
    for (const c of this.closers) c();
  }
}

export function openLowerStack(specs: LowerSpec[], source: LowerSource): LowerView {
  if (specs.length > MAX_LOWERS) throw new ObdkitError('EINVAL', `at most ${MAX_LOWERS} lower layers, got ${specs.length}`);
  const layers: SealedLayer[] = [];
  const closers: Array<() => void> = [];
  try {
    for (const spec of specs) {
      const ra = source.open(spec);
      if (ra.close) closers.push(() => ra.close!());
      layers.push(openSealedLayer(unwrapLayerBlob(ra).lsmt));
    }
  } catch (err) {
    for (const c of closers) c();
    throw err;
  }
  return new StackedLowers(layers, closers);
}

/**
 * Virtual size of a stack without serving it (main thread, before the device starts). Stacks with
 * remote layers are opened in a one-shot worker, since their reads must wait for the main thread.
 */
export async function lowerStackVirtualSize(specs: LowerSpec[], remote?: RemoteFetcher): Promise<number> {
  if (!specs.some((s) => s.kind === 'remote')) {
    const v = openLowerStack(specs, localLowerSource);
    try {
      return v.virtualSize;
    } finally {
      v.close();
    }
  }
  if (!remote) throw new ObdkitError('EINVAL', 'the stack has remote lowers but no remote fetcher was given');
  const ch = new MessageChannel();
  serveRemoteReads(ch.port1, remote);
  const w = new Worker(new URL('./probe-worker.js', import.meta.url), { workerData: { lowers: specs, port: ch.port2 }, transferList: [ch.port2] });
  try {
    const r = await new Promise<{ ok: boolean; virtualSize?: number; error?: string }>((res, rej) => {
      w.once('message', res);
      w.once('error', rej);
    });
    if (!r.ok) throw new ObdkitError('ELOWER', `cannot open the lower layers: ${r.error}`);
    return r.virtualSize!;
  } finally {
    ch.port1.close();
    await w.terminate();
  }
}
