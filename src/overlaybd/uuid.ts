// UUIDs as overlaybd stores them in LSMT headers: 8-4-4-4-12 hex text of 16 raw bytes, upper-case,
// NUL-terminated inside a 37-byte field (see lsmt-header.ts). Parsing accepts either case; writers always
// go through the binary form, so whatever case comes in, upper-case goes to disk. The all-zero UUID is the
// "null" value (a committed layer without an explicit uuid, a layer without a parent).
import { randomBytes } from 'node:crypto';
import { ObdkitError } from '../util/errors.js';

export const UUID_STRING_LENGTH = 36;
/** Size of the on-disk field: the 36 characters plus a terminating NUL. */
export const UUID_FIELD_SIZE = 37;
export const NULL_UUID = '00000000-0000-0000-0000-000000000000';

const DASHES = [8, 13, 18, 23];

/** True for exactly 36 characters, dashes at 8/13/18/23 and hex digits (either case) elsewhere. */
export function isValidUuid(s: string): boolean {
  if (s.length !== UUID_STRING_LENGTH) return false;
  for (let i = 0; i < UUID_STRING_LENGTH; i++) {
    const c = s.charCodeAt(i);
    if (DASHES.includes(i)) {
      if (c !== 0x2d) return false;
    } else if (!((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66))) {
      return false;
    }
  }
  return true;
}

export function uuidToBytes(s: string): Buffer {
  if (!isValidUuid(s)) throw new ObdkitError('EUUID', `invalid UUID ${JSON.stringify(s)}`, { field: 'uuid' });
  return Buffer.from(s.replaceAll('-', ''), 'hex');
}

export function uuidFromBytes(b: Uint8Array): string {
  if (b.length !== 16) throw new ObdkitError('EUUID', `a binary UUID has 16 bytes, got ${b.length}`);
  const h = Buffer.from(b.buffer, b.byteOffset, 16).toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Canonical (upper-case) form of a valid UUID string; throws on anything else. */
export function normalizeUuid(s: string): string {
  return uuidFromBytes(uuidToBytes(s));
}

export function isNullUuid(s: string): boolean {
  return isValidUuid(s) && /^[0-]+$/.test(s);
}

/** A random version-4 UUID in the on-disk (upper-case) form, as a new writable layer gets. */
export function randomUuid(): string {
  const b = randomBytes(16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return uuidFromBytes(b);
}
