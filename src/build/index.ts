// Build orchestration shared by `obdkit build` and `obdkit serve`: a BuildService per process
// (store, devices, solver), runBuild per build (Dockerfile → graph → solved chain) and the outputs
// that turn a built result into a pushed image, an archive or a rootfs; local.ts reads a build's
// inputs from this machine (`obdkit build`).
export { BuildService, type BuildServiceOptions, type RegistrySettings } from './service.js';
export { runBuild, type BuildRequest, type BuildHooks, type BuiltImage } from './run-build.js';
export { FetchedContexts, type ContextFetcher } from './contexts.js';
export { readLocalBuild, checkProgressMode, PROGRESS_MODES, type LocalBuild, type LocalBuildOptions } from './local.js';
export {
  parseOutput,
  parseOutputSpec,
  parseKeyValues,
  assembleBuilt,
  exportToRegistry,
  writeImageArchive,
  withRootfs,
  writeRootfs,
  writeLocalOutput,
  type OutputSpec,
  type LocalOutputSpec,
  type ImageOutput,
  type ArchiveOutput,
  type PushedImage,
} from './outputs.js';
