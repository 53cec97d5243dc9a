// The daemon's TOML configuration (`obdkit serve --config FILE`), in the spirit of buildkitd.toml:
//
//   root = "/var/lib/obdkit"
//   addresses = ["tcp://0.0.0.0:1234", "unix:///run/obdkit/obdkit.sock"]
//   [tls]      cert = "...", key = "...", ca = "..."
//   [registry."docker.io"]      mirrors = ["mirror.example.com"]
//   [registry."127.0.0.1:5000"] http = true, insecure = true, ca = ["/etc/ssl/reg-ca.pem"]
//   [worker]   device = "fuse", max-parallelism = 2, platforms = ["linux/amd64"], labels = { rack = "a1" }
//   [[worker.gcpolicy]] all = false, keep-duration = "48h", reserved-space = "10GB", filters = []
//
// Parsing validates every key and names the file and key path of a mistake.
import { readFile } from 'node:fs/promises';
import { parse, TomlError } from 'smol-toml';
import { ObdkitError } from '../util/errors.js';

export interface RegistryHostConfig {
  /** Hosts tried before this one for pulls (host[:port][/path]). */
  mirrors: string[];
  /** Speak plain HTTP to this registry. */
  http: boolean;
  /** Skip TLS verification (and allow HTTP fallback). */
  insecure: boolean;
  /** Extra CA certificate files for this registry. */
  ca: string[];
}

export interface GcPolicyConfig {
  all: boolean;
  keepDurationNs: bigint;
  reservedSpace: bigint;
  maxUsedSpace: bigint;
  minFreeSpace: bigint;
  filters: string[];
}

export interface WorkerConfig {
  /** How steps get a block device: `fuse` (FUSE file + loop device) or `tcmu` (overlaybd-tcmu). */
  device: 'fuse' | 'tcmu';
  /** Steps run at once; 0 = number of CPUs. */
  maxParallelism: number;
  /** Overrides the reported platforms (`os/arch[/variant]`), first = default. */
  platforms: string[];
  labels: Record<string, string>;
  gc: boolean;
  gcPolicy: GcPolicyConfig[];
}

export interface ServeConfig {
  root?: string;
  addresses: string[];
  tls?: { cert: string; key: string; ca?: string };
  registries: Record<string, RegistryHostConfig>;
  worker: WorkerConfig;
}

export function defaultServeConfig(): ServeConfig {
  return {
    addresses: [],
    registries: {},
    worker: { device: 'fuse', maxParallelism: 0, platforms: [], labels: {}, gc: true, gcPolicy: [] },
  };
}

type Table = Record<string, unknown>;

class Reader {
  constructor(private readonly file: string) {}

  fail(path: string, message: string): never {
    throw new ObdkitError('ECONFIG', message, { file: this.file, field: path });
  }

  table(v: unknown, path: string): Table {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Date) this.fail(path, 'expected a table');
    return v as Table;
  }

  only(t: Table, path: string, keys: string[]): void {
    for (const k of Object.keys(t)) if (!keys.includes(k)) this.fail(path ? `${path}.${k}` : k, `unknown key (expected one of ${keys.join(', ')})`);
  }

  str(v: unknown, path: string): string {
    if (typeof v !== 'string') this.fail(path, 'expected a string');
    return v as string;
  }

  bool(v: unknown, path: string): boolean {
    if (typeof v !== 'boolean') this.fail(path, 'expected true or false');
    return v as boolean;
  }

  int(v: unknown, path: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(path, 'expected a non-negative integer');
    return v as number;
  }

  strings(v: unknown, path: string): string[] {
    if (!Array.isArray(v)) this.fail(path, 'expected an array of strings');
    return (v as unknown[]).map((x, i) => this.str(x, `${path}[${i}]`));
  }

  /** A byte size: an integer, or a string such as `10GB`, `512MiB`. */
  bytes(v: unknown, path: string): bigint {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v);
    const m = typeof v === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*$/i.exec(v) : null;
    if (!m) this.fail(path, 'expected a byte size such as 10GB or 512MiB');
    const [, num, unit, bin] = m as RegExpExecArray;
    const base = bin ? 1024 : 1000;
    const pow = ' kmgtp'.indexOf((unit || ' ').toLowerCase());
    return BigInt(Math.round(Number(num) * base ** pow));
  }

  /** A duration: integer seconds, or a string such as `48h`, `30m`, `1h30m`. */
  duration(v: unknown, path: string): bigint {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v) * 1_000_000_000n;
    const units: Record<string, number> = { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9, d: 86400e9 };
    if (typeof v !== 'string' || !/^(\d+(ms|s|m|h|d))+$/.test(v)) this.fail(path, 'expected a duration such as 48h or 1h30m');
    let ns = 0n;
    for (const [, n, u] of (v as string).matchAll(/(\d+)(ms|s|m|h|d)/g)) ns += BigInt(n!) * BigInt(units[u!]!);
    return ns;
  }
}

const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/;

export function parseServeConfig(text: string, file = 'config'): ServeConfig {
  const r = new Reader(file);
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) throw new ObdkitError('ECONFIG', err.message, { file, line: err.line });
    throw err;
  }
  const cfg = defaultServeConfig();
  r.only(doc, '', ['root', 'addresses', 'tls', 'registry', 'worker']);
  if (doc['root'] !== undefined) cfg.root = r.str(doc['root'], 'root');
  if (doc['addresses'] !== undefined) cfg.addresses = r.strings(doc['addresses'], 'addresses');
  if (doc['tls'] !== undefined) {
    const t = r.table(doc['tls'], 'tls');
    r.only(t, 'tls', ['cert', 'key', 'ca']);
    const tls: ServeConfig['tls'] = { cert: r.str(t['cert'], 'tls.cert'), key: r.str(t['key'], 'tls.key') };
    if (t['ca'] !== undefined) tls.ca = r.str(t['ca'], 'tls.ca');
    cfg.tls = tls;
  }
  if (doc['registry'] !== undefined) {
    const regs = r.table(doc['registry'], 'registry');
    for (const [host, raw] of Object.entries(regs)) {
      const p = `registry."${host}"`;
      const t = r.table(raw, p);
      r.only(t, p, ['mirrors', 'http', 'insecure', 'ca']);
      cfg.registries[host] = {
        mirrors: t['mirrors'] === undefined ? [] : r.strings(t['mirrors'], `${p}.mirrors`),
        http: t['http'] === undefined ? false : r.bool(t['http'], `${p}.http`),
        insecure: t['insecure'] === undefined ? false : r.bool(t['insecure'], `${p}.insecure`),
        ca: t['ca'] === undefined ? [] : r.strings(t['ca'], `${p}.ca`),
      };
    }
  }
  if (doc['worker'] !== undefined) {
    const w = r.table(doc['worker'], 'worker');
    r.only(w, 'worker', ['device', 'max-parallelism', 'platforms', 'labels', 'gc', 'gcpolicy']);
    if (w['device'] !== undefined) {
      const d = r.str(w['device'], 'worker.device');
      if (d !== 'fuse' && d !== 'tcmu') r.fail('worker.device', 'expected "fuse" or "tcmu"');
      cfg.worker.device = d as WorkerConfig['device'];
    }
    if (w['max-parallelism'] !== undefined) cfg.worker.maxParallelism = r.int(w['max-parallelism'], 'worker.max-parallelism');
    if (w['platforms'] !== undefined) {
      cfg.worker.platforms = r.strings(w['platforms'], 'worker.platforms');
      cfg.worker.platforms.forEach((p, i) => PLATFORM.test(p) || r.fail(`worker.platforms[${i}]`, 'expected os/arch[/variant]'));
    }
    if (w['labels'] !== undefined) {
      const l = r.table(w['labels'], 'worker.labels');
      for (const [k, v] of Object.entries(l)) cfg.worker.labels[k] = r.str(v, `worker.labels.${k}`);
    }
    if (w['gc'] !== undefined) cfg.worker.gc = r.bool(w['gc'], 'worker.gc');
    if (w['gcpolicy'] !== undefined) {
      if (!Array.isArray(w['gcpolicy'])) r.fail('worker.gcpolicy', 'expected [[worker.gcpolicy]] tables');
      (w['gcpolicy'] as unknown[]).forEach((raw, i) => {
        const p = `worker.gcpolicy[${i}]`;
        const t = r.table(raw, p);
        r.only(t, p, ['all', 'keep-duration', 'reserved-space', 'max-used-space', 'min-free-space', 'filters']);
        cfg.worker.gcPolicy.push({
          all: t['all'] === undefined ? false : r.bool(t['all'], `${p}.all`),
          keepDurationNs: t['keep-duration'] === undefined ? 0n : r.duration(t['keep-duration'], `${p}.keep-duration`),
          reservedSpace: t['reserved-space'] === undefined ? 0n : r.bytes(t['reserved-space'], `${p}.reserved-space`),
          maxUsedSpace: t['max-used-space'] === undefined ? 0n : r.bytes(t['max-used-space'], `${p}.max-used-space`),
          minFreeSpace: t['min-free-space'] === undefined ? 0n : r.bytes(t['min-free-space'], `${p}.min-free-space`),
          filters: t['filters'] === undefined ? [] : r.strings(t['filters'], `${p}.filters`),
        });
      });
    }
  }
  return cfg;
}

export async function loadServeConfig(file: string): Promise<ServeConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ObdkitError('ECONFIG', `cannot read config: ${err instanceof Error ? err.message : String(err)}`, { file });
  }
  return parseServeConfig(text, file);
}
