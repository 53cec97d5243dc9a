// Cleanups that must also run when a bench is interrupted: the daemons and builds a bench starts run
// in their own process groups (so a deadline can kill a whole build), which also means Ctrl-C does
// not reach them. `withCleanup` registers a cleanup for the length of a block; SIGINT or SIGTERM runs
// the registered ones, newest first, and then exits.
const pending: Array<() => Promise<void>> = [];
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`\n${sig}: cleaning up\n`);
    void (async () => {
      for (const fn of pending.splice(0).reverse()) {
        try {
          await fn();
        } catch (err) {
          process.stderr.write(`cleanup failed: ${(err as Error).message}\n`);
        }
      }
      process.exit(130);
    })();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

/** Runs `body`, then `cleanup` (also on an exception, and on SIGINT/SIGTERM while `body` runs). */
export async function withCleanup<T>(cleanup: () => Promise<void>, body: () => Promise<T>): Promise<T> {
  install();
  pending.push(cleanup);
  try {
    return await body();
  } finally {
    const i = pending.lastIndexOf(cleanup);
    if (i >= 0) {
      pending.splice(i, 1);
      await cleanup();
    }
  }
}
