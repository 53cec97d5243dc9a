// `RUN --mount=...` values: a CSV list of `key=value` (and a few bare) fields, checked the way BuildKit
// checks them. Values arrive here already expanded; `convert.ts` turns a MountSpec into an ExecMount.
import type { CacheSharing, MountType } from '../src/solver/ops.js';

export interface MountSpec {
  type: MountType;
  from?: string;
  source?: string;
  target?: string;
  readonly?: boolean;
  id?: string;
  sharing?: CacheSharing;
  required?: boolean;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  env?: string;
}

const TYPES: MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const SHARING: CacheSharing[] = ['shared', 'private', 'locked'];

/** CSV fields: commas separate, double quotes group (`""` is a literal quote). */
export function csvFields(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (q) {
      if (ch === '"' && s[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') q = false;
      else cur += ch;
    } else if (ch === '"') q = true;
    else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (q) throw new Error(`failed to parse csv mounts: unterminated quote in ${JSON.stringify(s)}`);
  out.push(cur);
  return out.filter((f) => f !== '');
}

function parseBool(key: string, v: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  throw new Error(`invalid value for ${key}: ${v}`);
}

/** Sizes like `64m`, `1g`, `1024` (bytes, binary units, as docker's RAMInBytes). */
function ramInBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$/i.exec(v.trim());
  if (!m) throw new Error(`invalid size: '${v}'`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 }[m[2]!.toLowerCase() as '' | 'k']!;
  return Math.floor(Number(m[1]) * mult);
}

export function parseMount(value: string, expand: (w: string) => string): MountSpec {
  const m: MountSpec = { type: 'bind' };
  let roAuto = true;
  for (const field of csvFields(value)) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case 'readonly':
        case 'ro':
          m.readonly = true;
          roAuto = false;
          continue;
        case 'readwrite':
        case 'rw':
          m.readonly = false;
          roAuto = false;
          continue;
        case 'required':
          if (m.type === 'secret' || m.type === 'ssh') {
            m.required = true;
            continue;
          }
          throw new Error(`unexpected key '${key}' for mount type '${m.type}'`);
        default:
          throw new Error(`invalid field '${field}' must be a key=value pair`);
      }
    }
    const v = expand(field.slice(eq + 1));
    switch (key) {
      case 'type': {
        const t = v.toLowerCase() as MountType;
        if (!TYPES.includes(t)) throw new Error(`unsupported mount type "${v}"`);
        m.type = t;
        break;
      }
      case 'from':
        m.from = v;
        break;
      case 'source':
      case 'src':
        m.source = v;
        break;
      case 'target':
      case 'dst':
      case 'destination':
        m.target = v;
        break;
      case 'readonly':
      case 'ro':
        m.readonly = parseBool(key, v);
        roAuto = false;
        break;
      case 'readwrite':
      case 'rw':
        m.readonly = !parseBool(key, v);
        roAuto = false;
        break;
      case 'required':
        if (m.type !== 'secret' && m.type !== 'ssh') throw new Error(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = parseBool(key, v);
        break;
      case 'size':
        if (m.type !== 'tmpfs') throw new Error(`unexpected key '${key}' for mount type '${m.type}'`);
        m.size = ramInBytes(v);
        break;
      case 'id':
        m.id = v;
        break;
      case 'sharing': {
        const sh = v.toLowerCase() as CacheSharing;
        if (!SHARING.includes(sh)) throw new Error(`unsupported sharing value "${v}"`);
        m.sharing = sh;
        break;
      }
      case 'mode':
        if (!/^[0-7]+$/.test(v)) throw new Error(`invalid value ${v} for mode`);
        m.mode = parseInt(v, 8);
        break;
      case 'uid':
      case 'gid': {
        if (!/^\d+$/.test(v) || Number(v) > 0xffffffff) throw new Error(`invalid value ${v} for ${key}`);
        m[key] = Number(v);
        break;
      }
      case 'env':
        m.env = v;
        break;
      default:
        throw new Error(`unexpected key '${key}' in '${field}'`);
    }
  }
  const fileInfoAllowed = m.type === 'secret' || m.type === 'ssh' || m.type === 'cache';
  if (!fileInfoAllowed) {
    for (const k of ['mode', 'uid', 'gid'] as const) {
      if (m[k] !== undefined) throw new Error(`${k} not allowed for "${m.type}" type mounts`);
    }
  }
  if (roAuto) m.readonly = !(m.type === 'cache' || m.type === 'tmpfs');
  if (m.type === 'secret') {
    if (m.from !== undefined) throw new Error('secret mount should not have a from');
    if (m.sharing !== undefined) throw new Error('secret mount should not define sharing');
    if (!m.source && !m.target && !m.id && !m.env) throw new Error('invalid secret mount. one of source, target required');
    if (m.source && m.id) throw new Error("both source and id can't be set");
  }
  if (m.sharing !== undefined && m.type !== 'cache') throw new Error(`invalid cache sharing set for ${m.type} mount`);
  return m;
}
