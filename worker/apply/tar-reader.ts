// A streaming tar reader for OCI layers: ustar and GNU headers, pax extended headers (local and
// global) with binary-safe values, GNU long names/linknames, base-256 numbers. It yields one entry
// at a time with a body stream that must be consumed (or is skipped) before the next entry, so no
// file is ever held in memory. Pax values are kept as raw bytes because xattrs such as
// security.capability are binary; a utf-8 decoding pax parser would corrupt them.
// apply-layer.ts consumes these entries; byte-source.ts supplies the bytes.
import { FormatError } from '../../src/util/errors.js';
import type { ByteSource } from './byte-source.js';
import type { Timespec } from '../../src/util/syscalls.js';

export type EntryType = 'file' | 'link' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarEntry {
  /** Path as stored (pax `path`, GNU long name or ustar prefix + name), not yet cleaned. */
  name: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Timespec;
  /** From pax `atime` when present. */
  atime?: Timespec;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` (and `LIBARCHIVE.xattr.*`). */
  xattrs: Map<string, Buffer>;
  /** Byte offset of this entry's header in the uncompressed tar (for error messages). */
  offset: number;
}

const BLOCK = 512;

/** Parses a numeric header field: octal text, or base-256 when the top bit of the first byte is set. */
function parseNumber(b: Buffer, start: number, len: number, field: string, file: string, offset: number): number {
  const f = b.subarray(start, start + len);
  if (f[0]! & 0x80) {
    // Base-256 (GNU): big-endian two's complement; the first byte's top bit is only the marker.
    const negative = (f[0]! & 0x40) !== 0;
    let v = 0n;
    for (let i = 0; i < f.length; i++) v = (v << 8n) | BigInt(i === 0 ? f[i]! & 0x7f : f[i]!);
    if (negative) v -= 1n << BigInt(f.length * 8 - 1);
    const n = Number(v);
    if (!Number.isSafeInteger(n)) throw new FormatError(`numeric field ${field} out of range`, { file, offset: offset + start, field });
    return n;
  }
  const text = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[\0 ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new FormatError(`invalid octal number ${JSON.stringify(text)} in field ${field}`, { file, offset: offset + start, field });
  return parseInt(text, 8);
}

function cString(b: Buffer, start: number, len: number): string {
  const f = b.subarray(start, start + len);
  const nul = f.indexOf(0);
  return f.subarray(0, nul < 0 ? f.length : nul).toString('utf8');
}

function checksumOk(h: Buffer, stored: number): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  return stored === unsigned || stored === signed;
}

/** Parses pax records `"<len> <key>=<value>\n"`; values stay raw bytes. */
export function parsePaxRecords(data: Buffer, file: string, offset: number): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // trailing NUL padding written by some tools
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) throw new FormatError('pax record without length', { file, offset: offset + pos });
    const len = Number(data.toString('latin1', pos, sp));
    if (!Number.isSafeInteger(len) || len <= sp - pos || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new FormatError('malformed pax record', { file, offset: offset + pos });
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new FormatError('pax record without "="', { file, offset: offset + pos });
    out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

/** Parses a pax time `"[-]sec[.frac]"` into seconds + nanoseconds. */
export function parsePaxTime(v: string): Timespec | undefined {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(v);
  if (!m) return undefined;
  let sec = Number(m[2]);
  let nsec = Number(((m[3] ?? '') + '000000000').slice(0, 9));
  if (m[1] === '-') {
    sec = -sec;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  return Number.isSafeInteger(sec) ? { sec, nsec } : undefined;
}

function xattrsFrom(pax: Map<string, Buffer>): Map<string, Buffer> {
  const x = new Map<string, Buffer>();
  for (const [k, v] of pax) {
    if (k.startsWith('SCHILY.xattr.')) x.set(k.slice('SCHILY.xattr.'.length), v);
    else if (k.startsWith('LIBARCHIVE.xattr.')) {
      // libarchive: name is URL-encoded, value base64.
      x.set(decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(v.toString('latin1'), 'base64'));
    }
  }
  return x;
}

const TYPES: Record<string, EntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'link',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** Reads a tar archive entry by entry. `body()` streams the current entry's data. */
export class TarReader {
  private pendingBody = 0;
  private pendingPad = 0;
  private globalPax = new Map<string, Buffer>();

  constructor(
    private readonly src: ByteSource,
    private readonly file: string,
  ) {}

  /** Data of the entry last returned by next(), in chunks, exactly `size` bytes in all. */
  async *body(): AsyncGenerator<Buffer> {
    while (this.pendingBody > 0) {
      const chunk = await this.src.readUpTo(this.pendingBody);
      if (chunk === null) throw new FormatError('archive ends inside an entry', { file: this.file, offset: this.src.position });
      this.pendingBody -= chunk.length;
      yield chunk;
    }
  }

  private async skipRest(): Promise<void> {
    await this.src.skip(this.pendingBody + this.pendingPad, this.file);
    this.pendingBody = 0;
    this.pendingPad = 0;
  }

  private async readData(size: number, offset: number): Promise<Buffer> {
    if (size > 1 << 24) throw new FormatError(`extended header of ${size} bytes is too large`, { file: this.file, offset });
    const b = await this.src.readExact(size, this.file);
    await this.src.skip(pad(size), this.file);
    return b;
  }

  /** The next real entry, or null at the end of the archive. */
  async next(): Promise<TarEntry | null> {
    await this.skipRest();
    let pax = new Map<string, Buffer>();
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const offset = this.src.position;
      const h = await this.src.readBlockOrEnd(BLOCK, this.file);
      if (h === null) return null; // no end-of-archive marker: accepted, like GNU tar
      if (h.every((v) => v === 0)) return null; // end-of-archive (the second zero block is drained by the caller)
      const stored = parseNumber(h, 148, 8, 'chksum', this.file, offset);
      if (!checksumOk(h, stored)) throw new FormatError('tar header checksum mismatch', { file: this.file, offset });
      const flag = String.fromCharCode(h[156]!);
      const size = parseNumber(h, 124, 12, 'size', this.file, offset);
      if (flag === 'x' || flag === 'g') {
        const recs = parsePaxRecords(await this.readData(size, offset), this.file, offset + BLOCK);
        if (flag === 'g') for (const [k, v] of recs) this.globalPax.set(k, v);
        else for (const [k, v] of recs) pax.set(k, v);
        continue;
      }
      if (flag === 'L' || flag === 'K') {
        const data = await this.readData(size, offset);
        const nul = data.indexOf(0);
        const text = data.subarray(0, nul < 0 ? data.length : nul).toString('utf8');
        if (flag === 'L') longName = text;
        else longLink = text;
        continue;
      }
      const type = TYPES[flag];
      if (type === undefined) {
        throw new FormatError(`unsupported tar entry type ${JSON.stringify(flag)}`, { file: this.file, offset, field: 'typeflag' });
      }
      const all = new Map([...this.globalPax, ...pax]);
      for (const k of all.keys()) {
        if (k.startsWith('GNU.sparse.')) throw new FormatError('GNU sparse files are not supported', { file: this.file, offset });
      }
      const ustar = h.toString('latin1', 257, 263) === 'ustar\0';
      let name = cString(h, 0, 100);
      if (ustar && h[345] !== 0) name = `${cString(h, 345, 155)}/${name}`;
      if (longName !== undefined) name = longName;
      let linkname = longLink ?? cString(h, 157, 100);
      const paxStr = (k: string): string | undefined => all.get(k)?.toString('utf8');
      const pPath = paxStr('path');
      if (pPath !== undefined) name = pPath;
      const pLink = paxStr('linkpath');
      if (pLink !== undefined) linkname = pLink;
      const num = (k: string, dflt: number): number => {
        const v = paxStr(k);
        if (v === undefined) return dflt;
        const n = Number(v);
        if (!Number.isSafeInteger(n) || n < 0) throw new FormatError(`invalid pax ${k} ${JSON.stringify(v)}`, { file: this.file, offset, field: k });
        return n;
      };
      const realSize = num('size', size);
      let mtime: Timespec = { sec: parseNumber(h, 136, 12, 'mtime', this.file, offset), nsec: 0 };
      const pm = paxStr('mtime');
      if (pm !== undefined) mtime = parsePaxTime(pm) ?? mtime;
      const pa = paxStr('atime');
      const entry: TarEntry = {
        name,
        type: (flag === '0' || flag === '\0') && name.endsWith('/') ? 'dir' : type,
        mode: parseNumber(h, 100, 8, 'mode', this.file, offset) & 0o7777,
        uid: num('uid', parseNumber(h, 108, 8, 'uid', this.file, offset)),
        gid: num('gid', parseNumber(h, 116, 8, 'gid', this.file, offset)),
        size: realSize,
        mtime,
        linkname,
        devmajor: type === 'char' || type === 'block' ? parseNumber(h, 329, 8, 'devmajor', this.file, offset) : 0,
        devminor: type === 'char' || type === 'block' ? parseNumber(h, 337, 8, 'devminor', this.file, offset) : 0,
        xattrs: xattrsFrom(all),
        offset,
      };
      if (pa !== undefined) {
        const at = parsePaxTime(pa);
        if (at) entry.atime = at;
      }
      // Hard links, directories and special files may still announce a size: their data is skipped.
      this.pendingBody = realSize;
      this.pendingPad = pad(realSize);
      pax = new Map();
      return entry;
    }
  }
}

function pad(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}
