// Shared plumbing for CLI commands: parsing of numeric/size options and uniform error reporting.
// A command throws; `runAction` prints one clear line (with the error's context) and sets the exit code.
import { ObdkitError } from '../util/errors.js';

export function parseIntOption(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ObdkitError('EUSAGE', `${name} must be a non-negative integer, got ${JSON.stringify(value)}`, { field: name });
  }
  return n;
}

export function runAction<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      reportError(err);
      process.exitCode = err instanceof ObdkitError && err.code === 'EUSAGE' ? 2 : 1;
    }
  };
}

export function reportError(err: unknown): void {
  if (err instanceof ObdkitError) {
    process.stderr.write(`obdkit: ${err.message}\n`);
    if (process.env.OBDKIT_DEBUG && err.stack) process.stderr.write(`${err.stack}\n`);
  } else if (err instanceof Error) {
    process.stderr.write(`obdkit: ${err.message}\n`);
    if (process.env.OBDKIT_DEBUG && err.stack) process.stderr.write(`${err.stack}\n`);
  } else {
    process.stderr.write(`obdkit: ${String(err)}\n`);
  }
}
