// `obdkit layer …` and `obdkit zfile …`: the layer tools people and scripts use to make, seal, inspect,
// verify and read overlaybd layers by hand. Thin wrappers over src/overlaybd/.
import { closeSync, existsSync, openSync } from 'node:fs';
import type { Command } from 'commander';
import { commitLayer } from '../overlaybd/commit.js';
import { FileRandomAccess, SliceRandomAccess } from '../overlaybd/io.js';
import { unwrapLayerBlob, writeLayerBlob } from '../overlaybd/layer-open.js';
import { openSealedLayer, type SealedLayer } from '../overlaybd/lsmt-file.js';
import { LayerStack } from '../overlaybd/stack.js';
import { RwLayer } from '../overlaybd/rw-layer.js';
import { SECTOR_SIZE } from '../overlaybd/segment.js';
import { algorithmName, type ZFileAlgorithm } from '../overlaybd/codec.js';
import { hasFlag, verifyZFile, FLAG_HEADER_OVERWRITE, FLAG_CALC_DIGEST } from '../overlaybd/zfile.js';
import { decompressZFile, writeZFile } from '../overlaybd/zfile-writer.js';
import { isSealed } from '../overlaybd/lsmt-header.js';
import { ObdkitError } from '../util/errors.js';
import { openBlob, resolvePair } from './layer-files.js';
import { parseIntOption, runAction } from './run.js';

const GIB = 1024 ** 3;

function parseAlgorithm(v: string): ZFileAlgorithm {
  if (v !== 'lz4' && v !== 'zstd') throw new ObdkitError('EUSAGE', `--algorithm must be lz4 or zstd, got ${JSON.stringify(v)}`, { field: 'algorithm' });
  return v;
}

export function registerLayerCommands(program: Command): void {
  const layer = program.command('layer').description('make, seal, inspect, verify and read overlaybd layers');

  layer
    .command('create')
    .description('create an empty writable layer (data + index files), as overlaybd-create does')
    .argument('<data>', 'data file to create')
    .argument('<index>', 'index file to create')
    .requiredOption('--size <gib>', 'virtual disk size in GiB')
    .option('--parent-uuid <uuid>', 'parent layer UUID')
    .action(runAction((data: string, index: string, o: { size: string; parentUuid?: string }) => {
      const gib = Number(o.size);
      if (!Number.isFinite(gib) || gib <= 0) throw new ObdkitError('EUSAGE', `--size must be a positive number of GiB, got ${o.size}`, { field: 'size' });
      const rw = RwLayer.create(data, index, { virtualSize: Math.round(gib * GIB), ...(o.parentUuid ? { parentUuid: o.parentUuid } : {}) });
      rw.close();
    }));

  layer
    .command('write')
    .description('write standard input into a writable layer at a byte offset')
    .argument('<data>', 'data file')
    .argument('<index>', 'index file')
    .requiredOption('--offset <n>', 'byte offset on the virtual disk')
    .action(runAction(async (data: string, index: string, o: { offset: string }) => {
      const offset = parseIntOption('--offset', o.offset);
      const rw = RwLayer.open(data, index);
      try {
        await writeStdinInto(rw, offset);
        rw.fsync();
      } finally {
        rw.close();
      }
    }));

  layer
    .command('commit')
    .description('seal a writable layer into a layer file (optionally ZFile-compressed and tar-wrapped)')
    .argument('<data>', 'data file, or a writable directory')
    .argument('<index-or-out>', 'index file; or the output file when <data> is a writable directory')
    .argument('[out]', 'output layer file')
    .option('--zfile', 'compress as ZFile')
    .option('--algorithm <a>', 'lz4 or zstd', 'lz4')
    .option('--block-size <bytes>', 'ZFile block size (4096..32768)', '4096')
    .option('--tar', 'wrap in the one-file tar registries receive (implies --zfile)')
    .option('--uuid <uuid>', 'UUID of the new layer')
    .option('--parent-uuid <uuid>', 'UUID of its parent layer')
    .option('--message <m>', 'commit message (user tag, at most 256 bytes)')
    .action(runAction(async (data: string, second: string, third: string | undefined, o: CommitOpts) => {
      const pair = resolvePair(data, third === undefined ? undefined : second);
      const out = third ?? second;
      const rw = RwLayer.open(pair.data, pair.index, { readOnly: true });
      try {
        const bytes = commitLayer(rw, {
          ...(o.uuid ? { uuid: o.uuid } : {}),
          ...(o.parentUuid ? { parentUuid: o.parentUuid } : {}),
          ...(o.message !== undefined ? { userTag: o.message } : {}),
        });
        const zfile = Boolean(o.zfile || o.tar);
        const r = await writeLayerBlob(bytes, out, {
          zfile,
          tar: Boolean(o.tar),
          algorithm: parseAlgorithm(o.algorithm),
          blockSize: parseIntOption('--block-size', o.blockSize),
        });
        process.stdout.write(`${JSON.stringify({ file: out, size: r.size, digest: r.digest })}\n`);
      } finally {
        rw.close();
      }
    }));

  layer
    .command('inspect')
    .description('print what a layer blob is, as JSON')
    .argument('<blob>')
    .action(runAction((blob: string) => {
      const { file, unwrapped, layer: l } = openBlob(blob);
      try {
        const z = unwrapped.zfile;
        const info = {
          file: blob,
          kind: isSealed(l.header) ? 'lsmt-commit' : 'lsmt-sealed',
          wrapping: { tar: unwrapped.tar !== null, zfile: z !== null },
          flags: { header: l.header.flags, trailer: l.trailer.flags },
          uuid: l.uuid,
          parentUuid: l.parentUuid,
          userTag: l.userTag,
          virtualSize: l.virtualSize,
          extentCount: l.records.length,
          lsmtSize: unwrapped.lsmt.size,
          blobSize: file.size,
          compression: z ? (algorithmName(z.algo) ?? `unknown(${z.algo})`) : 'none',
          blockSize: z ? z.blockSize : null,
          zfile: z ? { blocks: z.indexSize, headerOverwritten: hasFlag(z, FLAG_HEADER_OVERWRITE), digests: hasFlag(z, FLAG_CALC_DIGEST), blockCrc: z.verify === 1 } : null,
        };
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      } finally {
        file.close();
      }
    }));

  layer
    .command('verify')
    .description('check a layer blob completely; exit non-zero naming the first bad byte offset')
    .argument('<blob>')
    .action(runAction((blob: string) => {
      verifyBlob(blob);
      process.stdout.write(`${blob}: ok\n`);
    }));

  layer
    .command('cat')
    .description('write bytes of the stacked virtual disk to standard output (first blob = bottom layer)')
    .argument('<blobs...>')
    .requiredOption('--offset <n>', 'byte offset')
    .requiredOption('--length <n>', 'byte count')
    .action(runAction(async (blobs: string[], o: { offset: string; length: string }) => {
      const offset = parseIntOption('--offset', o.offset);
      const length = parseIntOption('--length', o.length);
      const opened = blobs.map(openBlob);
      try {
        const stack = new LayerStack(opened.map((b) => b.layer));
        await catRange(stack, offset, length);
      } finally {
        for (const b of opened) b.file.close();
      }
    }));

  const zf = program.command('zfile').description('compress and decompress ZFiles');
  zf.command('compress')
    .argument('<in>')
    .argument('<out>')
    .option('--algorithm <a>', 'lz4 or zstd', 'lz4')
    .option('--block-size <bytes>', 'block size (4096..32768)', '4096')
    .action(runAction(async (input: string, out: string, o: { algorithm: string; blockSize: string }) => {
      const algorithm = parseAlgorithm(o.algorithm);
      const blockSize = parseIntOption('--block-size', o.blockSize);
      const src = new FileRandomAccess(input);
      const fd = openSync(out, 'w', 0o644);
      try {
        // Same shape as `overlaybd-zfile`: the header is not rewritten; the trailer holds the index info.
        await writeZFile(readChunks(src), fd, 0, { algorithm, blockSize, overwriteHeader: false });
      } finally {
        closeSync(fd);
        src.close();
      }
    }));
  zf.command('decompress')
    .argument('<in>')
    .argument('<out>')
    .action(runAction(async (input: string, out: string) => {
      const src = new FileRandomAccess(input);
      try {
        await decompressZFile(src, out);
      } finally {
        src.close();
      }
    }));
}

interface CommitOpts {
  zfile?: boolean;
  tar?: boolean;
  algorithm: string;
  blockSize: string;
  uuid?: string;
  parentUuid?: string;
  message?: string;
}

async function* readChunks(src: FileRandomAccess, chunk = 4 << 20): AsyncGenerator<Buffer> {
  for (let at = 0; at < src.size; at += chunk) yield src.pread(at, chunk);
}

/** Streams stdin into the layer; unaligned head/tail sectors are merged with what the layer holds. */
async function writeStdinInto(rw: RwLayer, offset: number): Promise<void> {
  let pos = offset;
  let pending: Buffer = Buffer.alloc(0);
  const flush = (final: boolean) => {
    if (pending.length === 0) return;
    const head = pos % SECTOR_SIZE;
    const start = pos - head;
    let body: Buffer = head ? Buffer.concat([rw.read(start, SECTOR_SIZE).buf.subarray(0, head), pending]) : pending;
    let keep = 0;
    if (!final) {
      keep = body.length % SECTOR_SIZE;
    } else if (body.length % SECTOR_SIZE) {
      const end = start + body.length;
      const tailStart = end - (end % SECTOR_SIZE);
      const tail = rw.read(tailStart, SECTOR_SIZE).buf.subarray(end % SECTOR_SIZE);
      body = Buffer.concat([body, tail]);
    }
    const writeLen = body.length - keep;
    if (writeLen > 0) rw.write(start, body.subarray(0, writeLen));
    pending = keep ? Buffer.from(body.subarray(writeLen)) : Buffer.alloc(0);
    pos = start + writeLen;
  };
  for await (const chunk of process.stdin) {
    pending = pending.length ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
    if (pending.length >= 4 << 20) flush(false);
  }
  flush(true);
}

async function catRange(stack: LayerStack, offset: number, length: number): Promise<void> {
  const out = process.stdout;
  const end = offset + length;
  const step = 1 << 20;
  let at = offset;
  while (at < end) {
    const alignedStart = at - (at % SECTOR_SIZE);
    const want = Math.min(end, alignedStart + step);
    const alignedEnd = Math.ceil(want / SECTOR_SIZE) * SECTOR_SIZE;
    const buf = stack.read(alignedStart, alignedEnd - alignedStart).subarray(at - alignedStart, want - alignedStart);
    if (!out.write(buf)) await new Promise<void>((r) => out.once('drain', () => r()));
    at = want;
  }
}

/**
 * Full check of a blob: wrappers, every ZFile block CRC, the LSMT header/trailer/index, and a read of
 * every mapped extent. Offsets in errors are blob offsets for wrapper faults and decompressed-LSMT
 * offsets for LSMT faults (the message says which).
 */
export function verifyBlob(path: string): void {
  if (!existsSync(path)) throw new ObdkitError('ENOENT', 'no such file', { file: path });
  const file = new FileRandomAccess(path);
  try {
    const unwrapped = unwrapLayerBlob(file);
    if (unwrapped.zfile) {
      const base = unwrapped.tar ? unwrapped.tar.payloadOffset : 0;
      const inner = unwrapped.tar ? new SliceRandomAccess(file, base, unwrapped.tar.payloadLength) : file;
      const v = verifyZFile(inner);
      if (!v.ok) throw new ObdkitError('EVERIFY', `bad ZFile: ${v.reason}`, { file: path, offset: base + v.offset });
    }
    let layer: SealedLayer;
    try {
      layer = openSealedLayer(unwrapped.lsmt);
    } catch (err) {
      throw annotateInner(err, path, unwrapped.zfile !== null);
    }
    for (const m of layer.records) {
      if (m.zeroed) continue;
      for (let s = 0; s < m.length; s += 2048) {
        const n = Math.min(2048, m.length - s);
        const at = (m.moffset + s) * SECTOR_SIZE;
        const got = unwrapped.lsmt.pread(at, n * SECTOR_SIZE);
        if (got.length !== n * SECTOR_SIZE) {
          throw new ObdkitError('EVERIFY', `extent at sector ${m.offset + s} ends past the layer data${unwrapped.zfile ? ' (offset in the decompressed LSMT)' : ''}`, { file: path, offset: at + got.length });
        }
      }
    }
  } finally {
    file.close();
  }
}

function annotateInner(err: unknown, path: string, compressed: boolean): unknown {
  if (err instanceof ObdkitError && compressed) {
    return new ObdkitError(err.code, `${err.message} (offset in the decompressed LSMT)`, { file: path, ...(err.context.offset !== undefined ? { offset: err.context.offset } : {}) });
  }
  return err;
}
