// Build orchestration shared by `obdkit build` and `obdkit serve`: a BuildService per process
// (store, devices, solver), runBuild per build (Dockerfile → graph → solved chain) and the outputs
// that turn a built result into a pushed image, an archive or a rootfs.
export { BuildService, type BuildServiceOptions, type RegistrySettings } from './service.js';
export { runBuild, type BuildRequest, type BuildHooks, type BuiltImage } from './run-build.js';
export { FetchedContexts, type ContextFetcher } from './contexts.js';
export {
  parseOutput,
  assembleBuilt,
  exportToRegistry,
  writeImageArchive,
  withRootfs,
  writeRootfs,
  type OutputSpec,
  type PushedImage,
} from './outputs.js';
