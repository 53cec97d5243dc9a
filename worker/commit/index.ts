// Sealing a step's writable layer into a layer blob in the content store.
export { sealStep, type SealInput, type SealOutcome } from './seal.js';
export { openLowerBlobs, lowerSpecOf, type SealLower } from './lower-blobs.js';
export { dedupInWorker, closeDedupWorkers, dedupWorkerStats, type DedupOptions } from './dedup-worker.js';
export { dedupAgainstLowers, filteredView, DEDUP_BLOCK_SECTORS, type DedupStats, type DedupResult } from './dedup.js';
export { chainId, uuidFromDigest, stepLayerUuid } from './chain-uuid.js';
