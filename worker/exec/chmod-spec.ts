// `COPY --chmod` values: octal (`0755`, `755`) or symbolic like chmod(1) (`u+x`, `go-w`, `a=rX`).
// Symbolic modes apply to each file's own mode, so the result is a function of the source mode.
import { ObdkitError } from '../../src/util/errors.js';

export type ModeFn = (mode: number, isDir: boolean) => number;

const WHO: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

/** Parses a --chmod value; a number is taken as the mode itself. */
export function parseChmod(spec: string | number): ModeFn {
  if (typeof spec === 'number') return () => spec & 0o7777;
  const s = spec.trim();
  if (/^[0-7]{1,4}$/.test(s)) {
    const m = parseInt(s, 8);
    return () => m;
  }
  const clauses = s.split(',').map((c) => {
    const m = /^([ugoa]*)((?:[+=-][rwxXst]*)+)$/.exec(c);
    if (m === null) throw new ObdkitError('ECHMOD', `invalid --chmod value ${spec}`, { field: 'chmod' });
    let who = 0;
    for (const ch of m[1]!) who |= WHO[ch]!;
    const ops = [...m[2]!.matchAll(/([+=-])([rwxXst]*)/g)].map((o) => ({ op: o[1]!, perms: o[2]! }));
    return { who: who === 0 ? 0o7777 : who, ops };
  });
  return (mode, isDir) => {
    let cur = mode & 0o7777;
    for (const c of clauses) {
      for (const { op, perms } of c.ops) {
        let bits = 0;
        for (const p of perms) {
          if (p === 'r') bits |= 0o444;
          else if (p === 'w') bits |= 0o222;
          else if (p === 'x') bits |= 0o111;
          else if (p === 'X' && (isDir || (cur & 0o111) !== 0)) bits |= 0o111;
          else if (p === 's') bits |= 0o6000;
          else if (p === 't') bits |= 0o1000;
        }
        bits &= c.who;
        if (op === '+') cur |= bits;
        else if (op === '-') cur &= ~bits;
        else cur = (cur & ~(c.who & 0o777)) | bits;
      }
    }
    return cur;
  };
}
