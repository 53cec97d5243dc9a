// The daemon side of FileSync.DiffCopy: fsutil's receiver. The build client walks a local directory it
// declared (`dir-name`), filtered by our include/exclude/followpaths headers, and sends one STAT packet per
// entry; we create directories, symlinks and hardlinks straight away, request every regular file by its
// implicit id (the count of STAT packets before it), and write the DATA chunks as they come, so a large
// context streams through with HTTP/2 flow control as the only buffer.
import { chmod, lchown, link, lutimes, mkdir, open, rm, symlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import { Packet, Packet_PacketType } from './gen/fsutil/wire.js';
import type { Stat } from './gen/fsutil/stat.js';
import { goModeKind, goModeToPosixPerm } from './file-mode.js';
import type { CallMetadata, SessionClient } from './session-client.js';

export const FILESYNC_DIFFCOPY = '/moby.filesync.v1.FileSync/DiffCopy';

export interface ReceiveDirOptions {
  /** The local name the client registered (`context`, `dockerfile`, ...). */
  dirName: string;
  /** Where to materialise it; created if missing. */
  dest: string;
  includePatterns?: readonly string[];
  excludePatterns?: readonly string[];
  /** Paths to include, resolving symlinks client-side (how the Dockerfile itself is fetched). */
  followPaths?: readonly string[];
  signal?: AbortSignal;
  /** Called with the running total of content bytes received. */
  onProgress?: (bytes: number) => void;
  /** Apply the sent uid/gid (default: when running as root). */
  applyOwnership?: boolean;
}

export interface ReceiveDirStats {
  entries: number;
  files: number;
  bytes: number;
}

interface PendingFile {
  path: string;
  abs: string;
  stat: Stat;
  handle?: FileHandle;
  /** DATA chunks (32 KiB from Go senders) gathered into fewer, larger writes. */
  buffered: Buffer[];
  bufferedBytes: number;
}

/** Bytes gathered per file before a write; at most a few files are in flight at once. */
const WRITE_BATCH = 1 << 20;

async function flush(file: PendingFile): Promise<void> {
  if (!file.handle) file.handle = await open(file.abs, 'r+');
  if (file.bufferedBytes === 0) return;
  const chunks = file.buffered;
  const total = file.bufferedBytes;
  file.buffered = [];
  file.bufferedBytes = 0;
  const { bytesWritten } = await file.handle.writev(chunks);
  if (bytesWritten < total) {
    // Short vectored write (rare on regular files): finish with plain writes.
    let rest = Buffer.concat(chunks).subarray(bytesWritten);
    while (rest.length > 0) rest = rest.subarray((await file.handle.write(rest)).bytesWritten);
  }
}

/** Builds the request headers; non-ASCII values are query-escaped with a `<key>-encoded` marker. */
export function fileSyncMetadata(opts: Pick<ReceiveDirOptions, 'dirName' | 'includePatterns' | 'excludePatterns' | 'followPaths'>): CallMetadata {
  const md: CallMetadata = {};
  const put = (key: string, values: readonly string[]) => {
    if (values.length === 0) return;
    // eslint-disable-next-line no-control-regex
    if (values.some((v) => /[^\x20-\x7e]/.test(v))) {
      md[key] = values.map((v) => encodeURIComponent(v).replace(/%20/g, '+'));
      md[`${key}-encoded`] = '1';
    } else {
      md[key] = [...values];
    }
  };
  put('dir-name', [opts.dirName]);
  put('include-patterns', opts.includePatterns ?? []);
  put('exclude-patterns', opts.excludePatterns ?? []);
  put('followpaths', opts.followPaths ?? []);
  return md;
}

function checkPath(p: string, dirName: string): void {
  const clean = posix.normalize(p);
  if (p === '' || p.startsWith('/') || clean !== p || clean === '..' || clean.startsWith('../') || clean === '.') {
    throw new ObdkitError('EPROTO', `sender sent an invalid path ${JSON.stringify(p)}`, { ref: dirName });
  }
}

async function applyMeta(abs: string, stat: Stat, kind: 'file' | 'dir' | 'symlink', owner: boolean): Promise<void> {
  // Whole seconds and the fraction separately: one float division of the nanosecond count loses a step.
  const secs = Number(stat.modTime / 1_000_000_000n) + Number(stat.modTime % 1_000_000_000n) / 1e9;
  if (kind === 'symlink') {
    if (owner) await lchown(abs, stat.uid, stat.gid);
    await lutimes(abs, secs, secs);
    return;
  }
  if (owner) await lchown(abs, stat.uid, stat.gid);
  // chmod after chown: chown clears setuid/setgid.
  await chmod(abs, goModeToPosixPerm(stat.mode));
  await utimes(abs, secs, secs);
}

/** Receives directory `dirName` from the client into `dest` (which should be empty or absent). */
export async function receiveDir(session: SessionClient, opts: ReceiveDirOptions): Promise<ReceiveDirStats> {
  const owner = opts.applyOwnership ?? process.getuid?.() === 0;
  await mkdir(opts.dest, { recursive: true });
  const call = session.open(FILESYNC_DIFFCOPY, fileSyncMetadata(opts), opts.signal);
  const files = new Map<number, PendingFile>();
  const dirs: { abs: string; stat: Stat }[] = [];
  const dirPaths = new Set<string>(['']);
  const regularPaths = new Set<string>();
  const stats: ReceiveDirStats = { entries: 0, files: 0, bytes: 0 };
  let nextId = 0;
  let listed = false;
  let finSent = false;
  const send = (p: Partial<Packet>) => call.send(Packet.encode(Packet.fromPartial(p)).finish());
  const maybeFinish = async () => {
    if (listed && files.size === 0 && !finSent) {
      finSent = true;
      await send({ type: Packet_PacketType.PACKET_FIN });
    }
  };
  const fail = (message: string): never => {
    throw new ObdkitError('EPROTO', message, { ref: `${session.id}/${opts.dirName}` });
  };
  try {
    for await (const msg of call.messages()) {
      const p = Packet.decode(msg);
      switch (p.type) {
        case Packet_PacketType.PACKET_STAT: {
          if (p.stat === undefined) {
            listed = true;
            await maybeFinish();
            break;
          }
          if (listed) fail('STAT after the end of the listing');
          const id = nextId++;
          const st = p.stat;
          checkPath(st.path, opts.dirName);
          stats.entries++;
          const abs = join(opts.dest, st.path);
          const kind = goModeKind(st.mode);
          // Parents must be directories of this transfer: never write through a symlink the sender made.
          const parent = posix.dirname(st.path);
          if (!dirPaths.has(parent === '.' ? '' : parent)) fail(`entry ${st.path} does not follow its parent directory`);
          if (kind === 'dir') {
            await mkdir(abs, { recursive: true });
            dirs.push({ abs, stat: st });
            dirPaths.add(st.path);
          } else if (kind === 'symlink') {
            await rm(abs, { force: true, recursive: true });
            await symlink(st.linkname, abs);
            await applyMeta(abs, st, 'symlink', owner);
          } else if (kind === 'file' && st.linkname !== '') {
            checkPath(st.linkname, opts.dirName);
            if (!regularPaths.has(st.linkname)) fail(`hardlink ${st.path} names ${st.linkname}, which is not an earlier regular file`);
            await rm(abs, { force: true, recursive: true });
            await link(join(opts.dest, st.linkname), abs);
          } else if (kind === 'file') {
            // Create the inode now: a later hardlink entry may name this file before its data arrives.
            await rm(abs, { force: true, recursive: true });
            await writeFile(abs, '', { mode: 0o600 });
            files.set(id, { path: st.path, abs, stat: st, buffered: [], bufferedBytes: 0 });
            regularPaths.add(st.path);
            stats.files++;
            await send({ type: Packet_PacketType.PACKET_REQ, ID: id });
          } else {
            // Device nodes, fifos and sockets cannot be made portably here and never matter in a context.
            log.debug({ path: st.path, kind }, 'skipping special file in synced directory');
          }
          break;
        }
        case Packet_PacketType.PACKET_DATA: {
          const f = files.get(p.ID);
          if (!f) fail(`DATA for unknown or finished file id ${p.ID}`);
          const file = f as PendingFile;
          if (p.data.length === 0) {
            await flush(file);
            await file.handle?.close();
            file.handle = undefined;
            files.delete(p.ID);
            await applyMeta(file.abs, file.stat, 'file', owner);
            await maybeFinish();
          } else {
            file.buffered.push(p.data);
            file.bufferedBytes += p.data.length;
            if (file.bufferedBytes >= WRITE_BATCH) await flush(file);
            stats.bytes += p.data.length;
            opts.onProgress?.(stats.bytes);
          }
          break;
        }
        case Packet_PacketType.PACKET_FIN:
          // The sender's answer to our FIN; the call ends with its status next.
          break;
        case Packet_PacketType.PACKET_ERR:
          fail(`client failed to send ${opts.dirName}: ${Buffer.from(p.data).toString('utf8')}`);
          break;
        default:
          fail(`unexpected packet type ${p.type} from sender`);
      }
    }
    if (!finSent) fail(`sync of ${opts.dirName} ended before all files arrived`);
    // Directory times last: creating children touched them.
    for (let i = dirs.length - 1; i >= 0; i--) await applyMeta(dirs[i]!.abs, dirs[i]!.stat, 'dir', owner);
    return stats;
  } catch (err) {
    call.cancel();
    throw err;
  } finally {
    for (const f of files.values()) await f.handle?.close().catch(() => undefined);
  }
}
