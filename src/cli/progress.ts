// `--progress plain|tty|auto` of `obdkit build`: which printer a build's progress goes to. `plain` is
// the numbered lines of worker/build/progress.ts, written as they come; `tty` the redrawn display of
// progress-tty.ts on the given terminal stream; `auto` (the default) is tty when that stream is a
// terminal and plain otherwise (a pipe, a file, a CI log).
import { PlainProgress, type BuildProgress } from '../../worker/build/progress.js';
import { TtyProgress, type TtyStream } from './progress-tty.js';

export type ProgressMode = 'plain' | 'tty' | 'auto';

/** `tty` was asked for, or `auto` and `stream` is a terminal. */
export function wantsTty(mode: string, stream: TtyStream | undefined): boolean {
  if (!stream) return false;
  return mode === 'tty' || (mode === 'auto' && stream.isTTY === true);
}

/** The printer for `mode`; plain lines go through `write`, the tty display to `stream`. */
export function makeProgress(mode: string, write: (s: string) => void, stream?: TtyStream): BuildProgress {
  return stream && wantsTty(mode, stream) ? new TtyProgress(stream) : new PlainProgress(write);
}
