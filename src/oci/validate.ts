// A tiny hand-rolled schema helper for JSON that crosses a process boundary (registry responses,
// docker config files, token server replies). Each reader narrows `unknown` to one shape and throws
// an ObdkitError naming the document and the JSON path of the first field that does not fit.
import { ObdkitError } from '../util/errors.js';

export type JsonObject = Record<string, unknown>;

/** Where the JSON came from (a reference, a file, a URL) and the path inside it. */
export class JsonPath {
  constructor(readonly source: string, readonly path = '$') {}
  at(key: string | number): JsonPath {
    return new JsonPath(this.source, typeof key === 'number' ? `${this.path}[${key}]` : `${this.path}.${key}`);
  }
  fail(message: string): never {
    throw new ObdkitError('EJSON', `${message} at ${this.path}`, { ref: this.source, field: this.path });
  }
}

export function parseJson(bytes: Buffer | string, source: string): unknown {
  try {
    return JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (err) {
    throw new ObdkitError('EJSON', `not valid JSON: ${(err as Error).message}`, { ref: source }, { cause: err });
  }
}

export function asObject(v: unknown, p: JsonPath): JsonObject {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) p.fail(`expected an object, got ${kind(v)}`);
  return v as JsonObject;
}

export function asString(v: unknown, p: JsonPath): string {
  if (typeof v !== 'string') p.fail(`expected a string, got ${kind(v)}`);
  return v;
}

export function asNumber(v: unknown, p: JsonPath): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) p.fail(`expected a number, got ${kind(v)}`);
  return v;
}

export function asArray(v: unknown, p: JsonPath): unknown[] {
  if (!Array.isArray(v)) p.fail(`expected an array, got ${kind(v)}`);
  return v;
}

export function optional<T>(v: unknown, p: JsonPath, read: (v: unknown, p: JsonPath) => T): T | undefined {
  return v === undefined || v === null ? undefined : read(v, p);
}

export function asStringArray(v: unknown, p: JsonPath): string[] {
  return asArray(v, p).map((x, i) => asString(x, p.at(i)));
}

export function asStringMap(v: unknown, p: JsonPath): Record<string, string> {
  const o = asObject(v, p);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(o)) out[k] = asString(x, p.at(k));
  return out;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}
