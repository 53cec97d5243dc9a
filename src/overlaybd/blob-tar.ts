// The one-member tar wrapper around an overlaybd layer blob (§4 of the format notes).
// Writing: the exact form `overlaybd-commit -z -t` emits — a pax header `overlaybd.pax` whose single
// record carries the size, a ustar header `overlaybd.commit` with size 0, the payload at byte 1536,
// zero padding to 512 and two zero end blocks — so re-wrapping a ZFile reproduces official blobs.
// Reading: the detector overlaybd applies (POSIX "ustar\0" + "00", valid checksum; GNU "ustar  " is
// not tar) and the payload window. layer-open.ts stacks this under ZFile and LSMT detection.
import { FormatError } from '../util/errors.js';
import type { RandomAccess } from './io.js';

export const TAR_BLOCK = 512;
/** Where the payload starts in the pax+ustar form. */
export const PAX_PAYLOAD_OFFSET = 1536;
const PLAIN_PAYLOAD_OFFSET = 512;
export const TAR_MEMBER_NAME = 'overlaybd.commit';
const PAX_NAME = 'overlaybd.pax';

function put(buf: Buffer, off: number, s: string): void {
  buf.write(s, off, 'latin1');
}

/** Octal number right-aligned with spaces in `width` characters. */
function octal(n: number, width: number): string {
  const s = n.toString(8);
  if (s.length > width) throw new RangeError(`${n} does not fit ${width} octal digits`);
  return s.padStart(width, ' ');
}

/** Sets the checksum field (offset 148) the way libtar does: 6 octal digits space-padded, space, NUL. */
function sealHeader(h: Buffer): void {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += h[i]!;
  put(h, 148, `${octal(sum, 6)} \0`);
}

function paxRecord(key: string, value: string): string {
  // "<len> key=value\n" where <len> counts its own digits.
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

export interface TarWrapOptions {
  /** st_mode of the member as the reference tool records it. Default 0o100644. */
  mode?: number;
}

/** The 1536 bytes in front of a payload of `payloadLength` bytes. */
export function encodePaxTarPrefix(payloadLength: number, opts: TarWrapOptions = {}): Buffer {
  const out = Buffer.alloc(PAX_PAYLOAD_OFFSET);
  const record = paxRecord('size', String(payloadLength));
  if (record.length > TAR_BLOCK) throw new RangeError('pax record exceeds one block');

  const pax = out.subarray(0, TAR_BLOCK);
  put(pax, 0, PAX_NAME);
  put(pax, 124, `${octal(record.length, 11)} `);
  pax[156] = 0x78; // 'x'
  put(pax, 257, 'ustar\0');
  put(pax, 263, '00');
  sealHeader(pax);

  put(out, TAR_BLOCK, record);

  const ustar = out.subarray(2 * TAR_BLOCK, 3 * TAR_BLOCK);
  put(ustar, 0, TAR_MEMBER_NAME);
  put(ustar, 100, `${octal(opts.mode ?? 0o100644, 6)} \0`);
  put(ustar, 108, `${octal(0, 6)} \0`);
  put(ustar, 116, `${octal(0, 6)} \0`);
  // The real size travels in the pax record only; the ustar size stays 0 as in the reference tool.
  put(ustar, 124, `${octal(0, 11)} `);
  put(ustar, 136, `${octal(0, 11)} `);
  ustar[156] = 0x30; // '0'
  put(ustar, 257, 'ustar\0');
  put(ustar, 263, '00');
  put(ustar, 265, 'root');
  put(ustar, 297, 'root');
  sealHeader(ustar);
  return out;
}

/** Bytes after the payload: zero padding to a 512 multiple, then two zero blocks. */
export function tarSuffixLength(payloadLength: number): number {
  const pad = (TAR_BLOCK - (payloadLength % TAR_BLOCK)) % TAR_BLOCK;
  return pad + 2 * TAR_BLOCK;
}

/** Total blob size of the pax+ustar form. */
export function paxTarSize(payloadLength: number): number {
  return PAX_PAYLOAD_OFFSET + payloadLength + tarSuffixLength(payloadLength);
}

export interface TarPayload {
  payloadOffset: number;
  payloadLength: number;
}

function parseOctal(h: Buffer, off: number, len: number): number | null {
  const s = h.toString('latin1', off, off + len).replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return null;
  return parseInt(s, 8);
}

/** True if `h` is a POSIX ustar header with a valid (unsigned or signed) checksum. */
export function isPosixTarHeader(h: Buffer): boolean {
  if (h.length < TAR_BLOCK) return false;
  if (h.toString('latin1', 257, 263) !== 'ustar\0' || h.toString('latin1', 263, 265) !== '00') return false;
  const stored = parseOctal(h, 148, 8);
  if (stored === null) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b >= 128 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

/**
 * Where the payload of a tar-wrapped layer blob lies, or null if `ra` is not tar (then it is used as
 * is). Once the first block is recognised as tar, inconsistencies are FormatErrors.
 */
export function detectTar(ra: RandomAccess): TarPayload | null {
  const file = ra.name;
  const first = ra.pread(0, TAR_BLOCK);
  if (!isPosixTarHeader(first)) return null;
  let payloadOffset = PLAIN_PAYLOAD_OFFSET;
  let paxSize = 0;
  let header = first;
  let headerAt = 0;
  if (first[156] === 0x78 /* 'x' */) {
    const recLen = parseOctal(first, 124, 12);
    if (recLen === null) throw new FormatError('bad pax header size field', { file, offset: 124, field: 'size' });
    if (recLen > TAR_BLOCK) {
      throw new FormatError(`pax data of ${recLen} bytes exceeds one block (not supported by overlaybd)`, {
        file, offset: 124, field: 'size',
      });
    }
    const data = ra.pread(TAR_BLOCK, recLen).toString('latin1');
    let pos = 0;
    while (pos < data.length) {
      const m = /^(\d+) /.exec(data.slice(pos));
      if (!m) break;
      const len = Number(m[1]);
      if (len <= m[0].length || pos + len > data.length) {
        throw new FormatError('malformed pax record', { file, offset: TAR_BLOCK + pos });
      }
      const rec = data.slice(pos + m[0].length, pos + len - 1);
      const eq = rec.indexOf('=');
      if (eq > 0 && rec.slice(0, eq) === 'size') {
        if (!/^\d+$/.test(rec.slice(eq + 1))) {
          throw new FormatError('bad pax size value', { file, offset: TAR_BLOCK + pos, field: 'size' });
        }
        paxSize = Number(rec.slice(eq + 1));
      }
      pos += len;
    }
    headerAt = 2 * TAR_BLOCK;
    header = ra.pread(headerAt, TAR_BLOCK);
    if (header.length < TAR_BLOCK) throw new FormatError('tar member header truncated', { file, offset: headerAt });
    payloadOffset = PAX_PAYLOAD_OFFSET;
  }
  const ustarSize = parseOctal(header, 124, 12);
  if (ustarSize === null) throw new FormatError('bad tar size field', { file, offset: headerAt + 124, field: 'size' });
  const payloadLength = paxSize > 0 ? paxSize : ustarSize;
  if (payloadOffset + payloadLength > ra.size) {
    throw new FormatError(
      `tar payload [${payloadOffset}, +${payloadLength}) runs past the end of the blob (${ra.size} bytes)`,
      { file, offset: ra.size },
    );
  }
  return { payloadOffset, payloadLength };
}
