// Per-step times from BuildKit-style plain progress, which buildctl and `obdkit build` both print:
// `#N [ i/n] INSTRUCTION` opens a step, `#N DONE 1.2s` closes it, `#N CACHED` answers it from the
// cache. Lets the bench put the two builders' steps side by side.

export interface StepTime {
  /** `[ 3/16] RUN ...` with the step counter normalised to `3/16`. */
  index: string;
  name: string;
  seconds?: number;
  cached: boolean;
}

export function parseStepTimes(progress: string): StepTime[] {
  const byNum = new Map<string, StepTime>();
  const order: StepTime[] = [];
  for (const line of progress.split('\n')) {
    const m = /^#(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const [, num, rest] = m as unknown as [string, string, string];
    const open = /^\[\s*(\d+\/\d+)\] (.*)$/.exec(rest);
    if (open && !byNum.has(num)) {
      const s: StepTime = { index: open[1]!, name: open[2]!, cached: false };
      byNum.set(num, s);
      order.push(s);
      continue;
    }
    const s = byNum.get(num);
    if (!s) continue;
    const done = /^DONE (\d+(?:\.\d+)?)s$/.exec(rest);
    if (done) s.seconds = Number(done[1]);
    else if (rest === 'CACHED') s.cached = true;
  }
  return order;
}

/** Seconds of a named phase in buildctl output, e.g. `exporting layers 8.6s done`. */
export function phaseSeconds(progress: string, phase: string): number | undefined {
  const esc = phase.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^#\\d+ ${esc} (\\d+(?:\\.\\d+)?)s done$`, 'm').exec(progress);
  return m ? Number(m[1]) : undefined;
}
