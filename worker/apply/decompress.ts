// Turns a layer stream of unknown compression into the plain tar stream, recognising the format by
// its first bytes (gzip 1f 8b, zstd 28 b5 2f fd, else uncompressed tar) instead of trusting a media
// type. gzip runs in node:zlib (libuv's thread pool); zstd in zstd-napi's streaming decompressor.
// Backpressure holds end to end: the tar reader pulls, and nothing upstream reads ahead of it.
import { Readable, pipeline, type Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';
import { ObdkitError } from '../../src/util/errors.js';

export type LayerCompression = 'none' | 'gzip' | 'zstd';

export function detectCompression(head: Buffer): LayerCompression | 'bzip2' | 'xz' {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 3 && head.toString('latin1', 0, 3) === 'BZh') return 'bzip2';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  return 'none';
}

export interface Decompressed {
  stream: Readable;
  compression: LayerCompression;
}

/** Peeks at the first bytes of `input` and returns the uncompressed stream. */
export async function openDecompressed(input: Readable, name: string): Promise<Decompressed> {
  const it: AsyncIterator<Buffer | string> = input[Symbol.asyncIterator]();
  const headParts: Buffer[] = [];
  let headLen = 0;
  let done = false;
  while (headLen < 6) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    headParts.push(b);
    headLen += b.length;
  }
  const head = Buffer.concat(headParts);
  const kind = detectCompression(head);
  if (kind === 'bzip2' || kind === 'xz') {
    input.destroy();
    throw new ObdkitError('EAPPLY_COMPRESSION', `layer is ${kind}-compressed; only plain tar, gzip and zstd layers are supported`, { file: name });
  }
  async function* replay(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    }
  }
  const raw = Readable.from(replay(), { objectMode: false });
  if (kind === 'none') return { stream: raw, compression: 'none' };
  const dec: Transform = kind === 'gzip' ? createGunzip({ chunkSize: 1 << 16 }) : new DecompressStream();
  // pipeline destroys every stage on failure, so a corrupt stream surfaces as an error on `dec`.
  pipeline(raw, dec, (err) => {
    if (err) input.destroy();
  });
  return { stream: dec, compression: kind };
}
