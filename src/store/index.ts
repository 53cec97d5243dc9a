// The local content store: layer blobs by digest, layer records, the converted-image cache, locks.
export { ContentStore, DEFAULT_ROOT } from './content-store.js';
export { KeyLock } from './key-lock.js';
export { isLayerRecord, type LayerRecord } from './layer-record.js';
