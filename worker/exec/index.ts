// The exec worker's public surface: RUN steps under runc (run-step.ts), COPY/ADD and the other file
// actions into a rootfs (copy-files.ts, copy-worker.ts, add-files.ts, file-actions.ts), start-up
// recovery (recover.ts), and the root-scoped path and user helpers they are built on.
export { runStep, prepareWorkdir, DEFAULT_HOSTNAME, DEFAULT_CGROUP_PARENT } from './run-step.js';
export type { RunStepOptions, RunStepResult, RunMount, BindMount, CacheMount, TmpfsMount, SecretMount, NetworkMode } from './run-step.js';
export { runcList, runcDelete, runcKill, type OutputCallback, type OutputStream, type RuncOptions } from './runc.js';
export { recoverStaleSteps, type RecoverReport } from './recover.js';
export { copyFiles, type CopyOptions } from './copy-files.js';
export { copyFilesInWorker } from './copy-worker.js';
export { addFiles, isUrl, type AddOptions } from './add-files.js';
export { extractArchive, detectCompression, type Compression } from './archive.js';
export { download, parseChecksum, type Download } from './remote.js';
export { mkdirInRoot, mkfileInRoot, type MkdirActionOptions, type MkfileActionOptions } from './file-actions.js';
export { parseChmod } from './chmod-spec.js';
export { resolveInRoot, resolveRelative, mkdirAllInRoot } from './root-path.js';
export { resolveUser, resolveChown, readUserDb, type ResolvedUser } from './user-db.js';
