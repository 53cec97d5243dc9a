// Reading images: manifests (verified against the digest they are addressed by), small blobs such
// as configs (size-capped, verified), and layer-sized blobs as streams whose digest is checked
// before the stream ends, so a consumer never sees a complete stream of unverified bytes.
// `downloadBlob` writes to a temp file and renames it into place only after verification.
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ObdkitError } from '../util/errors.js';
import { digestHasher, parseDigest } from '../oci/digest.js';
import { manifestAccept } from '../oci/media-types.js';
import { defaultPlatform, selectManifest } from '../oci/platform.js';
import { parseImageConfig, parseManifestBytes, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type ParsedManifest, type Platform } from '../oci/types.js';
import { header, type RegistryClient } from './client.js';
import { formatReference, manifestKey, withDigest, type ImageReference } from './reference.js';

/** Largest manifest or config we read into memory (the distribution default limit is 4 MiB). */
export const MAX_MANIFEST_BYTES = 8 << 20;

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
  parsed: ParsedManifest;
}

async function readCapped(body: Readable, cap: number, what: string, ref: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    n += b.length;
    if (n > cap) {
      body.destroy();
      throw new ObdkitError('EREG_TOO_LARGE', `${what} is larger than ${cap} bytes`, { ref });
    }
    parts.push(b);
  }
  return Buffer.concat(parts);
}

function digestOf(bytes: Buffer, algorithmOf: string): string {
  return `${parseDigest(algorithmOf).algorithm}:${digestHasher(algorithmOf).update(bytes).digest('hex')}`;
}

/** GETs a manifest or index by tag or digest. A digest reference is verified against the bytes. */
export async function getManifest(client: RegistryClient, ref: ImageReference): Promise<FetchedManifest> {
  const refText = formatReference(ref);
  const res = await client.send({
    ref,
    method: 'GET',
    target: `/v2/${ref.repository}/manifests/${manifestKey(ref)}`,
    headers: { accept: manifestAccept },
    actions: ['pull'],
    op: 'pull manifest',
  });
  const bytes = await readCapped(res.body, MAX_MANIFEST_BYTES, 'manifest', refText);
  const claimed = ref.digest ?? header(res.headers, 'docker-content-digest');
  const digest = digestOf(bytes, claimed && /^sha(256|512):/.test(claimed) ? claimed : 'sha256:');
  if (ref.digest && digest !== ref.digest) {
    throw new ObdkitError('EDIGEST_MISMATCH', `manifest digest mismatch: asked for ${ref.digest}, got bytes with ${digest}`, { ref: refText });
  }
  const said = header(res.headers, 'docker-content-digest');
  if (!ref.digest && said && said !== digest) {
    throw new ObdkitError('EDIGEST_MISMATCH', `registry says the manifest is ${said}, its bytes hash to ${digest}`, { ref: refText });
  }
  const parsed = parseManifestBytes(bytes, refText, header(res.headers, 'content-type'));
  return { bytes, mediaType: parsed.mediaType, digest, parsed };
}

/** HEADs a manifest: its digest, media type and size, or undefined if the registry does not have it. */
export async function headManifest(client: RegistryClient, ref: ImageReference): Promise<Descriptor | undefined> {
  const res = await client.send({
    ref,
    method: 'HEAD',
    target: `/v2/${ref.repository}/manifests/${manifestKey(ref)}`,
    headers: { accept: manifestAccept },
    actions: ['pull'],
    accept: [404],
    op: 'check manifest',
  });
  await res.body.dump();
  if (res.status === 404) return undefined;
  const digest = header(res.headers, 'docker-content-digest') ?? ref.digest;
  if (!digest) return undefined;
  return {
    mediaType: header(res.headers, 'content-type') ?? '',
    digest,
    size: Number(header(res.headers, 'content-length') ?? 0),
  };
}

/** HEADs a blob: its size, or undefined if this repository does not have it. */
export async function headBlob(client: RegistryClient, ref: ImageReference, digest: string): Promise<number | undefined> {
  const res = await client.send({
    ref,
    method: 'HEAD',
    target: `/v2/${ref.repository}/blobs/${digest}`,
    actions: ['pull'],
    accept: [404],
    op: `check blob ${digest}`,
  });
  await res.body.dump();
  if (res.status === 404) return undefined;
  const len = header(res.headers, 'content-length');
  return len === undefined ? -1 : Number(len);
}

/**
 * A pass-through stream that hashes and counts; it fails instead of ending when the bytes do not
 * match the digest or size, so `end`/`finish` mean "complete and verified".
 */
export class VerifyingStream extends Transform {
  private readonly hash;
  private seen = 0;
  constructor(private readonly digest: string, private readonly size: number | undefined, private readonly what: string) {
    super();
    this.hash = digestHasher(digest);
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.size !== undefined && this.seen > this.size) {
      cb(new ObdkitError('EDIGEST_MISMATCH', `more bytes than the expected ${this.size}`, { ref: this.what }));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    if (this.size !== undefined && this.seen !== this.size) {
      cb(new ObdkitError('EDIGEST_MISMATCH', `got ${this.seen} bytes, expected ${this.size}`, { ref: this.what, offset: this.seen }));
      return;
    }
    const got = `${parseDigest(this.digest).algorithm}:${this.hash.digest('hex')}`;
    if (got !== this.digest) {
      cb(new ObdkitError('EDIGEST_MISMATCH', `content digest is ${got}, expected ${this.digest}`, { ref: this.what }));
      return;
    }
    cb();
  }
}

/** Streams a blob; the stream errors (instead of ending) if size or digest do not match. */
export async function openBlob(client: RegistryClient, ref: ImageReference, digest: string, size?: number): Promise<Readable> {
  parseDigest(digest, { ref: formatReference(ref) });
  const what = `${ref.host}/${ref.repository}@${digest}`;
  const res = await client.send({
    ref,
    method: 'GET',
    target: `/v2/${ref.repository}/blobs/${digest}`,
    actions: ['pull'],
    op: `pull blob ${digest}`,
  });
  const verify = new VerifyingStream(digest, size, what);
  res.body.on('error', (err) => verify.destroy(err));
  return res.body.pipe(verify);
}

/** Reads a small blob (a config) fully into memory, verified. */
export async function getBlobBytes(client: RegistryClient, ref: ImageReference, desc: Descriptor, cap = MAX_MANIFEST_BYTES): Promise<Buffer> {
  if (desc.size > cap) {
    throw new ObdkitError('EREG_TOO_LARGE', `blob ${desc.digest} is ${desc.size} bytes, more than ${cap}`, { ref: formatReference(ref) });
  }
  const stream = await openBlob(client, ref, desc.digest, desc.size);
  return readCapped(stream, cap, `blob ${desc.digest}`, formatReference(ref));
}

/** Downloads a blob to `path`: written to a temp file beside it and renamed only once verified. */
export async function downloadBlob(client: RegistryClient, ref: ImageReference, digest: string, path: string, size?: number): Promise<void> {
  const tmp = `${path}.partial-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    const stream = await openBlob(client, ref, digest, size);
    await pipeline(stream, createWriteStream(tmp, { highWaterMark: 1 << 20 }));
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface ResolvedImage {
  ref: ImageReference;
  /** The index, if the reference named one. */
  index?: { digest: string; mediaType: string; index: ImageIndex };
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Buffer;
  manifest: ImageManifest;
  configBytes: Buffer;
  config: ImageConfig;
}

/** Resolves a reference to one platform's manifest and its config. */
export async function resolveImage(client: RegistryClient, ref: ImageReference, platform: Platform = defaultPlatform): Promise<ResolvedImage> {
  let m = await getManifest(client, ref);
  let index: ResolvedImage['index'];
  if (m.parsed.kind === 'index') {
    index = { digest: m.digest, mediaType: m.mediaType, index: m.parsed.index };
    const chosen = selectManifest(m.parsed.index, platform, formatReference(ref));
    m = await getManifest(client, withDigest(ref, chosen.digest));
  }
  if (m.parsed.kind !== 'manifest') {
    throw new ObdkitError('EMANIFEST', 'an index points to another index; nested indexes are not supported', { ref: formatReference(ref) });
  }
  const manifest = m.parsed.manifest;
  const configBytes = await getBlobBytes(client, ref, manifest.config);
  const resolved: ResolvedImage = {
    ref,
    manifestDigest: m.digest,
    manifestMediaType: m.mediaType,
    manifestBytes: m.bytes,
    manifest,
    configBytes,
    config: parseImageConfig(configBytes, `${formatReference(ref)} config ${manifest.config.digest}`),
  };
  if (index) resolved.index = index;
  return resolved;
}
