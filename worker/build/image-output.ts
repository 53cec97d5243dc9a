// From a solved layer chain and the frontend's image config to an exportable image (src/exporter):
// layer blobs from the content store, and a history whose empty_layer marks agree with the layers
// (a step that left no layer is marked empty; base-image history that does not match its layers is
// padded or trimmed so every layer has exactly one entry, as image configs require).
import type { ImageConfig, Platform } from '../../src/solver/ops.js';
import type { ContentStore } from '../../src/store/content-store.js';
import { assembleImage, type ExportImage } from '../../src/exporter/image.js';
import type { HistoryEntry, RuntimeConfig } from '../../src/exporter/image-config.js';
import type { LayersResult } from './result.js';

export function historyForLayers(history: readonly HistoryEntry[], chain: LayersResult): HistoryEntry[] {
  const out = history.map((h) => ({ ...h }));
  const layered = out.map((h, i) => (h.empty_layer ? -1 : i)).filter((i) => i >= 0);
  const steps = chain.steps;
  const stepLayers = steps.filter(Boolean).length;
  const baseLayers = chain.layers.length - stepLayers;
  if (layered.length < steps.length) {
    // Not the frontend's shape: describe the layers as they are.
    return chain.layers.map((l) => ({ created_by: `layer ${l.digest}`, comment: 'obdkit' }));
  }
  const stepEntries = layered.slice(layered.length - steps.length);
  stepEntries.forEach((idx, j) => {
    if (!steps[j]) out[idx]!.empty_layer = true;
  });
  const baseEntries = layered.slice(0, layered.length - steps.length);
  if (baseEntries.length > baseLayers) {
    for (const idx of baseEntries.slice(0, baseEntries.length - baseLayers)) out[idx]!.empty_layer = true;
  } else if (baseEntries.length < baseLayers) {
    const pad = Array.from({ length: baseLayers - baseEntries.length }, () => ({ created_by: 'base layer', comment: 'obdkit' }));
    out.unshift(...pad);
  }
  return out;
}

export function exportImageFrom(
  store: ContentStore,
  chain: LayersResult,
  image: ImageConfig,
  platform: Platform,
  opts: { oci?: boolean; created?: string } = {},
): ExportImage {
  return assembleImage({
    layers: chain.layers.map((l) => ({ path: store.blobPath(l.digest), digest: l.digest, size: l.size, fsType: 'ext4' as const })),
    config: image.config as RuntimeConfig,
    history: historyForLayers(image.history, chain),
    platform: { os: platform.os, architecture: platform.architecture, ...(platform.variant ? { variant: platform.variant } : {}) },
    ...(opts.created ? { created: opts.created } : {}),
    ...(image.author ? { author: image.author } : {}),
    oci: opts.oci ?? true,
  });
}
