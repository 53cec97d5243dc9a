// The image config (what `docker inspect` shows): the runtime settings a Dockerfile's ENV, CMD,
// ENTRYPOINT, USER, WORKDIR, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL and ONBUILD leave
// behind, `rootfs.diff_ids` (for overlaybd layers the blob digests, since each blob is an
// uncompressed tar) and `history`. Fields of a base image's config that obdkit does not model
// are carried over untouched. image.ts turns this into bytes and a descriptor.
import { ObdkitError } from '../util/errors.js';
import type { JsonValue } from './canonical-json.js';

import type { HealthConfig } from '../oci/types.js';

export type { HealthConfig };

/** The `config` object of an image config (Docker's container.Config subset images carry). */
export interface RuntimeConfig {
  User?: string;
  /** Keys like "80/tcp". */
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  Healthcheck?: HealthConfig;
  Shell?: string[];
  OnBuild?: string[] | null;
  ArgsEscaped?: boolean;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfigInput {
  architecture: string;
  os: string;
  variant?: string;
  /** RFC 3339; callers pass SOURCE_DATE_EPOCH's time for reproducible images. */
  created?: string;
  author?: string;
  config: RuntimeConfig;
  /** Digests of the layer blobs, base first. */
  diffIds: string[];
  history: HistoryEntry[];
  /** A base image's config document; unknown top-level fields survive. */
  base?: Record<string, JsonValue>;
}

/** Builds the config document. History must have one non-empty entry per layer. */
export function buildImageConfig(input: ImageConfigInput): Record<string, JsonValue> {
  const layered = input.history.filter((h) => !h.empty_layer).length;
  if (layered !== input.diffIds.length) {
    throw new ObdkitError('EEXPORT', `history has ${layered} layer entries for ${input.diffIds.length} layers`, {
      field: 'history',
    });
  }
  const doc: Record<string, JsonValue> = { ...(input.base ?? {}) };
  // Fields describing the old image's build, not this one.
  delete doc['container'];
  delete doc['container_config'];
  delete doc['docker_version'];
  doc['architecture'] = input.architecture;
  doc['os'] = input.os;
  if (input.variant !== undefined) doc['variant'] = input.variant;
  else delete doc['variant'];
  if (input.created !== undefined) doc['created'] = input.created;
  if (input.author !== undefined) doc['author'] = input.author;
  doc['config'] = runtimeConfigJson(input.config);
  doc['rootfs'] = { type: 'layers', diff_ids: input.diffIds };
  doc['history'] = input.history.map((h) => historyJson(h));
  return doc;
}

function runtimeConfigJson(c: RuntimeConfig): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  if (c.User !== undefined && c.User !== '') out['User'] = c.User;
  if (c.ExposedPorts && Object.keys(c.ExposedPorts).length) out['ExposedPorts'] = emptySet(Object.keys(c.ExposedPorts));
  if (c.Env?.length) out['Env'] = c.Env;
  if (c.Entrypoint !== undefined) out['Entrypoint'] = c.Entrypoint;
  if (c.Cmd !== undefined) out['Cmd'] = c.Cmd;
  if (c.Volumes && Object.keys(c.Volumes).length) out['Volumes'] = emptySet(Object.keys(c.Volumes));
  if (c.WorkingDir !== undefined && c.WorkingDir !== '') out['WorkingDir'] = c.WorkingDir;
  if (c.Labels && Object.keys(c.Labels).length) out['Labels'] = { ...c.Labels };
  if (c.StopSignal !== undefined && c.StopSignal !== '') out['StopSignal'] = c.StopSignal;
  if (c.Healthcheck !== undefined) {
    const h: Record<string, JsonValue> = { Test: c.Healthcheck.Test };
    for (const k of ['Interval', 'Timeout', 'StartPeriod', 'StartInterval', 'Retries'] as const) {
      const v = c.Healthcheck[k];
      if (v !== undefined && v !== 0) h[k] = v;
    }
    out['Healthcheck'] = h;
  }
  if (c.Shell?.length) out['Shell'] = c.Shell;
  if (c.OnBuild !== undefined && c.OnBuild !== null && c.OnBuild.length) out['OnBuild'] = c.OnBuild;
  if (c.ArgsEscaped) out['ArgsEscaped'] = true;
  return out;
}

function emptySet(keys: string[]): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const k of keys) out[k] = {};
  return out;
}

function historyJson(h: HistoryEntry): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  if (h.created !== undefined) out['created'] = h.created;
  if (h.created_by !== undefined) out['created_by'] = h.created_by;
  if (h.author !== undefined) out['author'] = h.author;
  if (h.comment !== undefined) out['comment'] = h.comment;
  if (h.empty_layer) out['empty_layer'] = true;
  return out;
}

/** `EXPOSE 80 53/udp` → {"80/tcp": {}, "53/udp": {}}. */
export function exposedPorts(specs: string[]): Record<string, Record<string, never>> {
  const out: Record<string, Record<string, never>> = {};
  for (const s of specs) {
    const [port, proto = 'tcp'] = s.split('/');
    if (port === undefined || !/^\d+(-\d+)?$/.test(port) || !/^(tcp|udp|sctp)$/i.test(proto)) {
      throw new ObdkitError('EEXPORT', `invalid port ${s}`, { field: 'ExposedPorts' });
    }
    out[`${port}/${proto.toLowerCase()}`] = {};
  }
  return out;
}
