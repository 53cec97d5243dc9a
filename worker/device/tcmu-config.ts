// overlaybd-tcmu's per-device config.v1.json (format §5.1): lowers bottom first, each a local
// `file` or a registry blob `{digest, size, dir}` fetched through `repoBlobUrl`, the writable
// upper pair, and the result file where overlaybd-tcmu reports `success` or `failed:<reason>`.
// Numbers and booleans must be real JSON types: overlaybd reads them with typed getters.
import { renameSync, writeFileSync } from 'node:fs';
import { ObdkitError } from '../../src/util/errors.js';
import type { LowerSpec } from './lower-source.js';
import type { PairPaths } from './rw-pair.js';

export interface OverlaybdConfigLower {
  file?: string;
  digest?: string;
  size?: number;
  dir?: string;
}

export interface OverlaybdConfig {
  repoBlobUrl: string;
  lowers: OverlaybdConfigLower[];
  upper: { data: string; index: string } | Record<string, never>;
  resultFile: string;
  accelerationLayer?: boolean;
  recordTracePath?: string;
}

export function buildOverlaybdConfig(lowers: LowerSpec[], upper: PairPaths | null, resultFile: string): OverlaybdConfig {
  let repoBlobUrl = '';
  const out: OverlaybdConfigLower[] = lowers.map((l) => {
    if (l.kind === 'file') return { file: l.path };
    if (repoBlobUrl !== '' && repoBlobUrl !== l.repoBlobUrl) {
      throw new ObdkitError('EINVAL', 'overlaybd-tcmu takes one repoBlobUrl per device; lowers come from two repositories', { ref: l.digest });
    }
    repoBlobUrl = l.repoBlobUrl;
    return { digest: l.digest, size: l.size, dir: l.dir };
  });
  if (out.length > 255) throw new ObdkitError('EINVAL', `at most 255 lower layers, got ${out.length}`);
  return { repoBlobUrl, lowers: out, upper: upper ? { data: upper.data, index: upper.index } : {}, resultFile };
}

export function writeConfigAtomic(path: string, cfg: OverlaybdConfig): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(cfg, null, 2), { mode: 0o600 });
  renameSync(tmp, path);
}
