// The daemon side of FileSend.DiffCopy: returning exporter output to the build client. File outputs
// (`type=tar`, `oci`, `docker`) go as a plain byte stream of BytesMessages; directory outputs
// (`type=local`) go with us as fsutil's *sender* (STAT listing, DATA on request, FIN), the Packets written
// directly as the call's messages although the service declares BytesMessage.
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ObdkitError } from '../util/errors.js';
import { BytesMessage } from './gen/session/filesync.js';
import { Packet, Packet_PacketType } from './gen/fsutil/wire.js';
import type { Stat } from './gen/fsutil/stat.js';
import { isGoRegular, posixToGoMode } from './file-mode.js';
import type { CallMetadata, SessionClient } from './session-client.js';

export const FILESEND_DIFFCOPY = '/moby.filesync.v1.FileSend/DiffCopy';

const BYTES_CHUNK = 3 << 20;
const DATA_CHUNK = 1 << 20;

function sendMetadata(exporterIndex: number, extra: Record<string, string>): CallMetadata {
  const md: CallMetadata = { 'buildkit-attachable-exporter-id': String(exporterIndex) };
  for (const [k, v] of Object.entries(extra)) md[k.toLowerCase()] = v;
  return md;
}

/**
 * Streams a file output (a tar or image archive) to the client. `exporterMetadata` keys become
 * `exporter-md-<key>` headers.
 */
export async function sendFile(
  session: SessionClient,
  exporterIndex: number,
  source: AsyncIterable<Uint8Array>,
  opts: { exporterMetadata?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<number> {
  const extra: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.exporterMetadata ?? {})) extra[`exporter-md-${k}`] = v;
  const call = session.open(FILESEND_DIFFCOPY, sendMetadata(exporterIndex, extra), opts.signal);
  let total = 0;
  try {
    for await (const chunk of source) {
      for (let off = 0; off < chunk.length; off += BYTES_CHUNK) {
        const part = Buffer.from(chunk.buffer, chunk.byteOffset + off, Math.min(BYTES_CHUNK, chunk.length - off));
        await call.send(BytesMessage.encode({ data: part }).finish());
        total += part.length;
      }
    }
    call.end();
    for await (const _ of call.messages()) {
      // The receiver sends nothing back for file outputs; drain until its status.
    }
    return total;
  } catch (err) {
    call.cancel();
    throw err;
  }
}

interface WalkEntry {
  abs: string;
  stat: Stat;
}

/** Depth-first, byte-wise sorted walk: the order fsutil's receiver validates. */
async function* walk(root: string, rel = ''): AsyncGenerator<WalkEntry> {
  const names = (await readdir(join(root, rel))).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const name of names) {
    const path = rel === '' ? name : `${rel}/${name}`;
    const abs = join(root, path);
    const st = await lstat(abs, { bigint: true });
    const mode = posixToGoMode(Number(st.mode));
    const stat: Stat = {
      path,
      mode,
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: st.isFile() ? st.size : 0n,
      modTime: st.mtimeNs,
      linkname: st.isSymbolicLink() ? await readlink(abs) : '',
      devmajor: 0n,
      devminor: 0n,
      xattrs: {},
    };
    if (st.isSocket()) continue;
    yield { abs, stat };
    if (st.isDirectory()) yield* walk(root, path);
  }
}

/** Sends directory `dir` to the client as a `type=local` output. */
export async function sendDir(
  session: SessionClient,
  exporterIndex: number,
  dir: string,
  opts: { signal?: AbortSignal; extraMetadata?: Record<string, string> } = {},
): Promise<{ files: number; bytes: number }> {
  const call = session.open(FILESEND_DIFFCOPY, sendMetadata(exporterIndex, opts.extraMetadata ?? {}), opts.signal);
  const regular = new Map<number, string>();
  const counts = { files: 0, bytes: 0 };
  const send = (p: Partial<Packet>) => call.send(Packet.encode(Packet.fromPartial(p)).finish());
  const sendFileData = async (id: number, abs: string) => {
    const fh = await open(abs, 'r');
    try {
      const buf = Buffer.allocUnsafe(DATA_CHUNK);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, DATA_CHUNK, null);
        if (bytesRead === 0) break;
        await send({ type: Packet_PacketType.PACKET_DATA, ID: id, data: Buffer.from(buf.subarray(0, bytesRead)) });
        counts.bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
    await send({ type: Packet_PacketType.PACKET_DATA, ID: id, data: Buffer.alloc(0) });
  };
  try {
    // The listing goes first in full; requests are answered afterwards, which fsutil's receiver allows.
    let id = 0;
    for await (const e of walk(dir)) {
      if (isGoRegular(e.stat.mode)) {
        regular.set(id, e.abs);
        counts.files++;
      }
      await send({ type: Packet_PacketType.PACKET_STAT, stat: e.stat });
      id++;
    }
    await send({ type: Packet_PacketType.PACKET_STAT });
    for await (const msg of call.messages()) {
      const p = Packet.decode(msg);
      if (p.type === Packet_PacketType.PACKET_REQ) {
        const abs = regular.get(p.ID);
        if (abs === undefined) throw new ObdkitError('EPROTO', `receiver requested invalid file id ${p.ID}`, { file: dir });
        regular.delete(p.ID);
        await sendFileData(p.ID, abs);
      } else if (p.type === Packet_PacketType.PACKET_FIN) {
        await send({ type: Packet_PacketType.PACKET_FIN });
        call.end();
      } else if (p.type === Packet_PacketType.PACKET_ERR) {
        throw new ObdkitError('EPROTO', `client failed to receive output: ${Buffer.from(p.data).toString('utf8')}`, { file: dir });
      }
    }
    return counts;
  } catch (err) {
    call.cancel();
    throw err;
  }
}
