// The build pipeline's worker side: the solver Executor and what it is built from.
export { BuildExecutor, type ExecutorDeps } from './executor.js';
export { imageLayers, type ImageSourceDeps } from './image-source.js';
export { LocalDirContexts, FileSecrets, type ContextProvider, type SecretProvider } from './providers.js';
export { localContentHasher } from './content-hash.js';
export { isLayersResult, type BuildResult, type LayersResult, type LocalResult, type DirResult } from './result.js';
export { runOnWritableDevice, ViewSet } from './step-device.js';
export { StoreCheckedIndex } from './checked-index.js';
export { PlainProgress, humanBytes } from './progress.js';
export { exportImageFrom, historyForLayers } from './image-output.js';
