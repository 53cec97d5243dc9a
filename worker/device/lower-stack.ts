// Stacks the lower layer blobs of a device into one LowerView: each blob is unwrapped by content
// (tar → ZFile → LSMT, src/overlaybd/layer-open.ts), opened as a sealed layer, and stacked with
// src/overlaybd/stack.ts, where for every sector the newest layer holding a record (data or zeroed)
// wins. Opened once per worker thread: ZFile readers keep per-thread block caches.
import { MessageChannel, Worker } from 'node:worker_threads';
import { ObdkitError } from '../../src/util/errors.js';
import { openSealedLayer, type SealedLayer } from '../../src/overlaybd/lsmt-file.js';
import { unwrapLayerBlob } from '../../src/overlaybd/layer-open.js';
import { LayerStack, MAX_STACK_LAYERS } from '../../src/overlaybd/stack.js';
import { localLowerSource, type LowerSource, type LowerSpec, type LowerView } from './lower-source.js';
import { serveRemoteReads, type RemoteFetcher } from './remote-channel.js';

class StackedLowers implements LowerView {
  private readonly stack: LayerStack;

  constructor(
    layers: SealedLayer[],
    private readonly closers: Array<() => void>,
  ) {
    this.stack = new LayerStack(layers);
  }

  get virtualSize(): number {
    return this.stack.virtualSize;
  }

  read(offset: number, length: number): Buffer {
    return this.stack.read(offset, length);
  }

  close(): void {
    for (const c of this.closers) c();
  }
}

export function openLowerStack(specs: LowerSpec[], source: LowerSource): LowerView {
  if (specs.length > MAX_STACK_LAYERS) throw new ObdkitError('EINVAL', `at most ${MAX_STACK_LAYERS} lower layers, got ${specs.length}`);
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
