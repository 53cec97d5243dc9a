// Summaries for bench output: medians with their range, and sizes in the units the results table uses.

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** `12.3 s (11.0–14.1)` for several samples, `12.3 s` for one, `—` for none. */
export function secondsSummary(xs: readonly number[], digits = 2): string {
  if (xs.length === 0) return '—';
  const m = `${median(xs).toFixed(digits)} s`;
  if (xs.length === 1) return m;
  return `${m} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;
}

/** Decimal megabytes with the exact byte count, e.g. `455.5 MB (455,512,345 B)`. */
export function megabytes(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB (${n.toLocaleString('en-US')} B)`;
}

export function ratio(a: readonly number[], b: readonly number[]): string {
  if (a.length === 0 || b.length === 0 || median(b) === 0) return '—';
  return (median(a) / median(b)).toFixed(2);
}
