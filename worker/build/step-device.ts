// The device side of one build step: a writable device over the parent's layers (mkfs when there are
// none yet), the step's work on the mounted ext4, then the step's writes sealed into the next layer.
// Read-only views serve other vertices' trees (bind mounts, COPY --from).
//
// Consecutive steps of a stage share one live device (DevicePool). At a step boundary the device is
// checkpointed instead of torn down: the filesystem is remounted read-only (clean, complete image),
// the index records written since the previous boundary are cut into an RW index of their own over
// the same append-only data file, and that slice is sealed — so the layer holds exactly this step's
// writes, as if the device had been built fresh over the sealed parent chain. The seal runs in the
// background: the step hands on an early result naming its layer as unsealed, the device is parked
// under that chain, and the next step runs on it while the layer is compressed and hashed. Whoever
// needs the real chain (a new device, a view, the solver's settle) awaits it with settleChain().
// A snapshotter without checkpoints (TCMU) or a failed checkpoint falls back to tearing the device
// down and sealing before the step returns. Devices are torn down when a step fails and, parked
// ones, when the build closes its pool — after every seal still reading their data files.
import { randomUUID } from 'node:crypto';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NULL_UUID } from '../../src/overlaybd/uuid.js';
import type { RegistryClient } from '../../src/registry/client.js';
import type { ContentStore } from '../../src/store/content-store.js';
import { ObdkitError } from '../../src/util/errors.js';
import { log } from '../../src/util/log.js';
import type { RemoteFetcher } from '../device/remote-channel.js';
import type { BlockSnapshotter, DeviceHandle } from '../device/snapshotter.js';
import { HEADER_SIZE, indexFileSize, writeIndexSlice, type PairPaths } from '../device/rw-pair.js';
import { stepLayerUuid } from '../commit/chain-uuid.js';
import { sealStep, type SealOutcome } from '../commit/seal.js';
import { chainLowers } from './chain-lowers.js';
import type { LayerRecord } from '../../src/store/layer-record.js';
import type { LayersResult } from './result.js';

export interface StepDeviceDeps {
  store: ContentStore;
  snapshotter: BlockSnapshotter;
  /** Reads ranges of layers that live in a registry (lazily stacked overlaybd bases). */
  remote?: RemoteFetcher;
  /** Picks http or https for registry hosts of remote layers. */
  registry?: RegistryClient;
}

/** Seals running in the background, by the id an early result names them with. */
const unsealed = new Map<string, Promise<SealOutcome>>();

/** `chain` with every layer still being sealed in place (waits for those seals). */
export async function settleChain(chain: LayersResult): Promise<LayersResult> {
  if (!chain.unsealed || chain.unsealed.length === 0) return chain;
  const layers = [...chain.layers];
  const steps = [...chain.steps];
  for (const id of chain.unsealed) {
    const seal = unsealed.get(id);
    if (!seal) throw new ObdkitError('EUNSEALED', `layer ${id} is not being sealed by this process`);
    const o = await seal;
    if (o.layer) layers.push(o.layer);
    steps.push(o.layer !== undefined);
  }
  return { kind: 'layers', layers, steps };
}

/** A writable device and where the next step's records start in its index file. */
interface StepDevice {
  handle: DeviceHandle;
  writableDir: string;
  upper: PairPaths;
  /** Index-file offset of the first record not yet handed to a seal. */
  sealedUpTo: number;
  steps: number;
  /** Seals still reading this device's data file. */
  sealing: Set<Promise<unknown>>;
}

/** Devices kept alive between the steps of a build, keyed by the layer chain their filesystem shows. */
export class DevicePool {
  private readonly parked = new Map<string, StepDevice>();
  private readonly ids = new Set<string>();
  private closed = false;

  constructor(
    private readonly deps: StepDeviceDeps,
    /** Parked devices beyond this are torn down, oldest first. */
    private readonly maxParked = 3,
  ) {}

  /** A parked device whose filesystem is exactly `chain`, taken out of the pool. */
  take(chain: LayersResult): StepDevice | undefined {
    const key = chainKey(chain);
    const d = this.parked.get(key);
    if (d) this.parked.delete(key);
    return d;
  }

  async park(chain: LayersResult, d: StepDevice): Promise<void> {
    const key = chainKey(chain);
    if (this.closed || this.parked.has(key)) {
      await discard(this.deps, d);
      return;
    }
    this.parked.set(key, d);
    while (this.parked.size > this.maxParked) {
      const [oldest, dev] = this.parked.entries().next().value as [string, StepDevice];
      this.parked.delete(oldest);
      await discard(this.deps, dev);
    }
  }

  /** Registers a background seal under a fresh id (what the early result names). */
  track(seal: Promise<SealOutcome>, d: StepDevice): string {
    const id = randomUUID();
    unsealed.set(id, seal);
    this.ids.add(id);
    const done = seal.then(
      () => undefined,
      () => undefined,
    );
    d.sealing.add(done);
    void done.then(() => {
      d.sealing.delete(done);
      if (this.closed) this.forget(id);
    });
    return id;
  }

  /** Waits for every background seal, then tears down the parked devices. */
  async close(): Promise<void> {
    this.closed = true;
    for (const [key, d] of [...this.parked]) {
      this.parked.delete(key);
      await discard(this.deps, d);
    }
    await Promise.allSettled([...this.ids].map((id) => unsealed.get(id)));
    for (const id of [...this.ids]) this.forget(id);
  }

  private forget(id: string): void {
    this.ids.delete(id);
    unsealed.delete(id);
  }
}

function chainKey(chain: LayersResult): string {
  return [...chain.layers.map((l) => l.digest), ...(chain.unsealed ?? [])].join(',');
}

async function discard(deps: StepDeviceDeps, d: StepDevice): Promise<void> {
  await Promise.allSettled([...d.sealing]);
  await deps.snapshotter.remove(d.handle).catch((err: unknown) => log.warn({ err, device: d.handle.device }, 'tearing down a build device failed'));
  await rm(d.writableDir, { recursive: true, force: true });
}

function lowersOf(deps: StepDeviceDeps, chain: LayersResult) {
  return chainLowers(deps.store, chain.layers, deps.registry ? { registry: deps.registry } : {});
}

async function newDevice(deps: StepDeviceDeps, parent: LayersResult): Promise<StepDevice> {
  const { store, snapshotter } = deps;
  await mkdir(store.workDir, { recursive: true });
  const writableDir = await mkdtemp(join(store.workDir, 'step-'));
  try {
    const lowers = lowersOf(deps, parent);
    const handle = await snapshotter.prepare(writableDir, lowers, { mkfs: lowers.length === 0 });
    if (!handle.upper) throw new ObdkitError('EDEVICE', 'prepare returned a device without a writable layer', { file: writableDir });
    // A fresh pair: everything from its first record on (mkfs included) belongs to the first step.
    return { handle, writableDir, upper: handle.upper, sealedUpTo: HEADER_SIZE, steps: 0, sealing: new Set() };
  } catch (err) {
    await rm(writableDir, { recursive: true, force: true });
    throw err;
  }
}

export interface StepOutcome {
  /** The chain after the step; with a pool it may name the step's layer as unsealed. */
  result: LayersResult;
  /** Settles when the step's layer is sealed (or found empty). */
  sealed: Promise<SealOutcome>;
}

export interface StepSealOptions {
  /** The layer's LSMT uuid (default: derived from the parent chain and the step's cache key). */
  uuid?: string;
  /** Keep every written block, even when the step left nothing visible (1:1 converted layers). */
  keepEmpty?: boolean;
  /** Adds to the sealed layer's record before it is stored (a converted layer's source). */
  describe?: (layer: LayerRecord) => LayerRecord;
  /** Seal before returning and park the device under the sealed chain (default: in the background). */
  settled?: boolean;
}

/** Runs `work` on a writable rootfs over `parent` and seals what changed into the next layer. */
export async function runOnWritableDevice(
  deps: StepDeviceDeps,
  parent: LayersResult,
  stepKey: string,
  userTag: string,
  work: (rootfs: string) => Promise<void>,
  pool?: DevicePool,
  opts: StepSealOptions = {},
): Promise<StepOutcome> {
  const { store, snapshotter } = deps;
  const t0 = performance.now();
  const reused = pool?.take(parent);
  const dev = reused ?? (await newDevice(deps, await settleChain(parent)));
  const t1 = performance.now();
  let live = true;
  let end = -1;
  let t2 = t1;
  try {
    await work(dev.handle.mountpoint);
    t2 = performance.now();
    if (pool && snapshotter.checkpoint) {
      try {
        end = await snapshotter.checkpoint(dev.handle);
      } catch (err) {
        log.warn({ err, device: dev.handle.device }, 'checkpoint failed; tearing the step device down instead');
      }
    }
    if (end < 0) {
      await snapshotter.commit(dev.handle);
      live = false;
      end = indexFileSize(dev.upper);
    }
  } catch (err) {
    if (live) await discard(deps, dev);
    else await rm(dev.writableDir, { recursive: true, force: true });
    throw err;
  }
  const t3 = performance.now();
  const from = Math.max(HEADER_SIZE, dev.sealedUpTo);
  dev.sealedUpTo = end;
  const stepIndex = join(dev.writableDir, `step-${dev.steps++}.index`);
  const seal = (async (): Promise<SealOutcome> => {
    const base = await settleChain(parent);
    try {
      writeIndexSlice(dev.upper, from, end, stepIndex);
      const top = base.layers[base.layers.length - 1];
      const input = {
        upper: { data: dev.upper.data, index: stepIndex },
        lowers: lowersOf(deps, base),
        ...(deps.remote ? { remote: deps.remote } : {}),
        uuid: opts.uuid ?? stepLayerUuid(base.layers.map((l) => l.digest), stepKey),
        parentUuid: top ? top.uuid : NULL_UUID,
        userTag,
        store,
      };
      let outcome = await sealStep(input);
      if (!outcome.layer && opts.keepEmpty) outcome = await sealStep({ ...input, noDedup: true });
      if (outcome.layer && opts.describe) {
        const layer = opts.describe(outcome.layer);
        await store.putLayer(layer);
        outcome = { ...outcome, layer };
      }
      log.debug(
        { step: userTag, device: reused ? 'reused' : 'new', prepareMs: ms(t0, t1), workMs: ms(t1, t2), checkpointMs: ms(t2, t3), sealMs: ms(t3, performance.now()) },
        'step device timings',
      );
      return outcome;
    } finally {
      await rm(stepIndex, { force: true });
    }
  })();

  if (!live || !pool) {
    // Torn down already: seal now, then the pair can go.
    try {
      const outcome = await seal;
      return { result: appendLayer(await settleChain(parent), outcome), sealed: Promise.resolve(outcome) };
    } finally {
      await rm(dev.writableDir, { recursive: true, force: true });
    }
  }
  if (opts.settled) {
    let result: LayersResult;
    try {
      result = appendLayer(await settleChain(parent), await seal);
    } catch (err) {
      await discard(deps, dev);
      throw err;
    }
    await pool.park(result, dev);
    return { result, sealed: seal };
  }
  const id = pool.track(seal, dev);
  const result: LayersResult = { kind: 'layers', layers: parent.layers, steps: parent.steps, unsealed: [...(parent.unsealed ?? []), id] };
  await pool.park(result, dev);
  return { result, sealed: seal };
}

function appendLayer(parent: LayersResult, outcome: SealOutcome): LayersResult {
  const layers = outcome.layer ? [...parent.layers, outcome.layer] : parent.layers;
  return { kind: 'layers', layers, steps: [...parent.steps, outcome.layer !== undefined] };
}

function ms(a: number, b: number): number {
  return Math.round(b - a);
}

/** Read-only trees of other vertices, mounted on demand and all released by `close()`. */
export class ViewSet {
  private readonly handles: DeviceHandle[] = [];
  private readonly emptyDirs: string[] = [];

  constructor(private readonly deps: StepDeviceDeps) {}

  /** A directory showing the filesystem of `chain` (an empty directory for an empty chain). */
  async mount(chain: LayersResult): Promise<string> {
    const settled = await settleChain(chain);
    if (settled.layers.length === 0) {
      await mkdir(this.deps.store.workDir, { recursive: true });
      const d = await mkdtemp(join(this.deps.store.workDir, 'empty-'));
      this.emptyDirs.push(d);
      return d;
    }
    const h = await this.deps.snapshotter.view(lowersOf(this.deps, settled));
    this.handles.push(h);
    return h.mountpoint;
  }

  async close(): Promise<void> {
    for (const h of this.handles.splice(0)) await this.deps.snapshotter.remove(h).catch(() => undefined);
    for (const d of this.emptyDirs.splice(0)) await rm(d, { recursive: true, force: true });
  }
}
