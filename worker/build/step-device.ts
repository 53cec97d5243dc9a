// The device side of one build step: a writable device over the parent's layers (mkfs when there are
// none yet), the step's work on the mounted ext4, then commit and seal into the next layer. Read-only
// views serve other vertices' trees (bind mounts, COPY --from). Every device is torn down in finally
// blocks (umount → loop detach → FUSE), also when the step fails.
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NULL_UUID } from '../../src/overlaybd/uuid.js';
import type { ContentStore } from '../../src/store/content-store.js';
import type { BlockSnapshotter, DeviceHandle } from '../device/snapshotter.js';
import { stepLayerUuid } from '../commit/chain-uuid.js';
import { sealStep, type SealOutcome } from '../commit/seal.js';
import type { LayersResult } from './result.js';

export interface StepDeviceDeps {
  store: ContentStore;
  snapshotter: BlockSnapshotter;
}

/** Runs `work` on a writable rootfs over `parent`, seals what changed, returns the new chain. */
export async function runOnWritableDevice(
  deps: StepDeviceDeps,
  parent: LayersResult,
  stepKey: string,
  userTag: string,
  work: (rootfs: string) => Promise<void>,
): Promise<{ result: LayersResult; outcome: SealOutcome }> {
  const { store, snapshotter } = deps;
  await mkdir(store.workDir, { recursive: true });
  const writable = await mkdtemp(join(store.workDir, 'step-'));
  const lowers = parent.layers.map((l) => store.blobPath(l.digest));
  try {
    const handle = await snapshotter.prepare(writable, lowers.map((path) => ({ kind: 'file', path })), { mkfs: lowers.length === 0 });
    let pair;
    try {
      await work(handle.mountpoint);
      pair = await snapshotter.commit(handle);
    } catch (err) {
      await snapshotter.remove(handle).catch(() => undefined);
      throw err;
    }
    const top = parent.layers[parent.layers.length - 1];
    const outcome = await sealStep({
      upper: pair,
      lowers,
      uuid: stepLayerUuid(parent.layers.map((l) => l.digest), stepKey),
      parentUuid: top ? top.uuid : NULL_UUID,
      userTag,
      store,
    });
    const layers = outcome.layer ? [...parent.layers, outcome.layer] : parent.layers;
    return { result: { kind: 'layers', layers, steps: [...parent.steps, outcome.layer !== undefined] }, outcome };
  } finally {
    await rm(writable, { recursive: true, force: true });
  }
}

/** Read-only trees of other vertices, mounted on demand and all released by `close()`. */
export class ViewSet {
  private readonly handles: DeviceHandle[] = [];
  private readonly emptyDirs: string[] = [];

  constructor(private readonly deps: StepDeviceDeps) {}

  /** A directory showing the filesystem of `chain` (an empty directory for an empty chain). */
  async mount(chain: LayersResult): Promise<string> {
    if (chain.layers.length === 0) {
      await mkdir(this.deps.store.workDir, { recursive: true });
      const d = await mkdtemp(join(this.deps.store.workDir, 'empty-'));
      this.emptyDirs.push(d);
      return d;
    }
    const h = await this.deps.snapshotter.view(chain.layers.map((l) => ({ kind: 'file', path: this.deps.store.blobPath(l.digest) })));
    this.handles.push(h);
    return h.mountpoint;
  }

  async close(): Promise<void> {
    for (const h of this.handles.splice(0)) await this.deps.snapshotter.remove(h).catch(() => undefined);
    for (const d of this.emptyDirs.splice(0)) await rm(d, { recursive: true, force: true });
  }
}
