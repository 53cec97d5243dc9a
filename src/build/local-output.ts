// `type=local,dest=DIR`: the final rootfs tree copied out to a directory, with modes, owners,
// times, links and xattrs kept. The copy itself is worker/exec's COPY machinery (run on a worker
// thread), which never follows a symlink of the tree and never writes outside `dest`; it lives here,
// with the other output wiring, so that src/exporter needs nothing from the worker.
import { mkdirSync } from 'node:fs';
import { copyFilesInWorker } from '../../worker/exec/copy-worker.js';

export async function exportLocal(rootfs: string, dest: string): Promise<void> {
  mkdirSync(dest, { recursive: true });
  await copyFilesInWorker({ srcRoot: rootfs, sources: ['/'], destRoot: dest, dest: '/', preserveOwnership: true });
}
