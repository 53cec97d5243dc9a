// OCI / Docker v2 schema 2 document types (descriptor, image manifest, index / manifest list, image
// config) and their validating parsers. Parsed documents keep every field the registry sent (`raw`
// keeps unknown extras), so copying an image re-sends the exact bytes and digests do not change.
import { isDigest } from './digest.js';
import { isIndexMediaType, isManifestMediaType, MediaType } from './media-types.js';
import {
  asArray,
  asNumber,
  asObject,
  asString,
  asStringArray,
  asStringMap,
  JsonPath,
  optional,
  parseJson,
  type JsonObject,
} from './validate.js';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** Docker's HEALTHCHECK as an image config carries it; durations in nanoseconds. */
export interface HealthConfig {
  Test: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  config?: JsonObject;
  rootfs: { type: string; diff_ids: string[] };
  history?: JsonObject[];
  /** The whole document as sent, unknown fields included. */
  raw: JsonObject;
}

export type ParsedManifest =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; index: ImageIndex };

export function readPlatform(v: unknown, p: JsonPath): Platform {
  const o = asObject(v, p);
  const out: Platform = { architecture: asString(o.architecture, p.at('architecture')), os: asString(o.os, p.at('os')) };
  const variant = optional(o.variant, p.at('variant'), asString);
  if (variant !== undefined) out.variant = variant;
  const osVersion = optional(o['os.version'], p.at('os.version'), asString);
  if (osVersion !== undefined) out['os.version'] = osVersion;
  const osFeatures = optional(o['os.features'], p.at('os.features'), asStringArray);
  if (osFeatures !== undefined) out['os.features'] = osFeatures;
  return out;
}

export function readDescriptor(v: unknown, p: JsonPath): Descriptor {
  const o = asObject(v, p);
  const digest = asString(o.digest, p.at('digest'));
  if (!isDigest(digest)) p.at('digest').fail(`invalid digest ${JSON.stringify(digest)}`);
  const size = asNumber(o.size, p.at('size'));
  if (!Number.isSafeInteger(size) || size < 0) p.at('size').fail(`invalid size ${size}`);
  const d: Descriptor = { mediaType: asString(o.mediaType, p.at('mediaType')), digest, size };
  const urls = optional(o.urls, p.at('urls'), asStringArray);
  if (urls !== undefined) d.urls = urls;
  const annotations = optional(o.annotations, p.at('annotations'), asStringMap);
  if (annotations !== undefined) d.annotations = annotations;
  const platform = optional(o.platform, p.at('platform'), readPlatform);
  if (platform !== undefined) d.platform = platform;
  const artifactType = optional(o.artifactType, p.at('artifactType'), asString);
  if (artifactType !== undefined) d.artifactType = artifactType;
  return d;
}

function readSchemaVersion(o: JsonObject, p: JsonPath): 2 {
  const v = asNumber(o.schemaVersion, p.at('schemaVersion'));
  if (v !== 2) p.at('schemaVersion').fail(`unsupported schemaVersion ${v} (only 2 is supported)`);
  return 2;
}

export function readManifest(v: unknown, p: JsonPath): ImageManifest {
  const o = asObject(v, p);
  const m: ImageManifest = {
    schemaVersion: readSchemaVersion(o, p),
    config: readDescriptor(o.config, p.at('config')),
    layers: asArray(o.layers, p.at('layers')).map((x, i) => readDescriptor(x, p.at('layers').at(i))),
  };
  const mediaType = optional(o.mediaType, p.at('mediaType'), asString);
  if (mediaType !== undefined) m.mediaType = mediaType;
  const artifactType = optional(o.artifactType, p.at('artifactType'), asString);
  if (artifactType !== undefined) m.artifactType = artifactType;
  const subject = optional(o.subject, p.at('subject'), readDescriptor);
  if (subject !== undefined) m.subject = subject;
  const annotations = optional(o.annotations, p.at('annotations'), asStringMap);
  if (annotations !== undefined) m.annotations = annotations;
  return m;
}

export function readIndex(v: unknown, p: JsonPath): ImageIndex {
  const o = asObject(v, p);
  const idx: ImageIndex = {
    schemaVersion: readSchemaVersion(o, p),
    manifests: asArray(o.manifests, p.at('manifests')).map((x, i) => readDescriptor(x, p.at('manifests').at(i))),
  };
  const mediaType = optional(o.mediaType, p.at('mediaType'), asString);
  if (mediaType !== undefined) idx.mediaType = mediaType;
  const artifactType = optional(o.artifactType, p.at('artifactType'), asString);
  if (artifactType !== undefined) idx.artifactType = artifactType;
  const subject = optional(o.subject, p.at('subject'), readDescriptor);
  if (subject !== undefined) idx.subject = subject;
  const annotations = optional(o.annotations, p.at('annotations'), asStringMap);
  if (annotations !== undefined) idx.annotations = annotations;
  return idx;
}

/**
 * Parses manifest bytes. The media type comes from the document's own `mediaType` field, else from
 * the HTTP Content-Type, else from its shape (`manifests` → index, `layers` → manifest).
 */
export function parseManifestBytes(bytes: Buffer, source: string, contentType?: string): ParsedManifest {
  const p = new JsonPath(source);
  const o = asObject(parseJson(bytes, source), p);
  const declared = typeof o.mediaType === 'string' ? o.mediaType : undefined;
  const ct = contentType?.split(';')[0]?.trim();
  let mediaType: string | undefined = declared ?? (isIndexMediaType(ct) || isManifestMediaType(ct) ? ct : undefined);
  if (mediaType === undefined) {
    if (Array.isArray(o.manifests)) mediaType = MediaType.ociIndex;
    else if (Array.isArray(o.layers)) mediaType = MediaType.ociManifest;
    else return p.fail('neither an image manifest nor an index (no mediaType, layers or manifests)');
  }
  if (isIndexMediaType(mediaType)) return { kind: 'index', mediaType, index: readIndex(o, p) };
  if (isManifestMediaType(mediaType)) return { kind: 'manifest', mediaType, manifest: readManifest(o, p) };
  return p.at('mediaType').fail(`unsupported manifest media type ${mediaType}`);
}

export function parseImageConfig(bytes: Buffer, source: string): ImageConfig {
  const p = new JsonPath(source);
  const o = asObject(parseJson(bytes, source), p);
  const rootfs = asObject(o.rootfs, p.at('rootfs'));
  const cfg: ImageConfig = {
    rootfs: {
      type: asString(rootfs.type, p.at('rootfs').at('type')),
      diff_ids: asStringArray(rootfs.diff_ids ?? [], p.at('rootfs').at('diff_ids')),
    },
    raw: o,
  };
  const architecture = optional(o.architecture, p.at('architecture'), asString);
  if (architecture !== undefined) cfg.architecture = architecture;
  const os = optional(o.os, p.at('os'), asString);
  if (os !== undefined) cfg.os = os;
  const variant = optional(o.variant, p.at('variant'), asString);
  if (variant !== undefined) cfg.variant = variant;
  const created = optional(o.created, p.at('created'), asString);
  if (created !== undefined) cfg.created = created;
  const config = optional(o.config, p.at('config'), asObject);
  if (config !== undefined) cfg.config = config;
  const history = optional(o.history, p.at('history'), (v, hp) => asArray(v, hp).map((h, i) => asObject(h, hp.at(i))));
  if (history !== undefined) cfg.history = history;
  return cfg;
}
