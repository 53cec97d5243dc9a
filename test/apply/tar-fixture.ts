// Builds small tar archives in memory for the applier's tests, byte by byte, where tar-stream's
// packer cannot express the case: pax records with binary values (security.capability), GNU
// long-name ('L'/'K') entries, and names that try to escape the root.
export interface FixtureEntry {
  name: string;
  type?: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  data?: Buffer | string;
  devmajor?: number;
  devminor?: number;
  /** pax records for this entry (values are written as raw bytes). */
  pax?: Record<string, Buffer | string>;
  /** Emit the name (and linkname) as GNU long-name entries instead of in the header. */
  gnuLong?: boolean;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(name: string, type: string, size: number, e: Partial<FixtureEntry>, gnu: boolean): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, 'utf8');
  h.write(octal(e.mode ?? (type === '5' ? 0o755 : 0o644), 8), 100, 'latin1');
  h.write(octal(e.uid ?? 0, 8), 108, 'latin1');
  h.write(octal(e.gid ?? 0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(e.mtime ?? 1_600_000_000, 12), 136, 'latin1');
  h.write(type, 156, 'latin1');
  if (e.linkname !== undefined && !e.gnuLong) h.write(e.linkname.slice(0, 100), 157, 'utf8');
  if (gnu) h.write('ustar  \0', 257, 'latin1');
  else h.write('ustar\u000000', 257, 'latin1');
  h.write(octal(e.devmajor ?? 0, 8), 329, 'latin1');
  h.write(octal(e.devminor ?? 0, 8), 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function padded(b: Buffer): Buffer[] {
  const pad = (512 - (b.length % 512)) % 512;
  return pad ? [b, Buffer.alloc(pad)] : [b];
}

function paxRecords(recs: Record<string, Buffer | string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(recs)) {
    const val = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'utf8'), val, Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    parts.push(Buffer.concat([Buffer.from(String(len)), body]));
  }
  return Buffer.concat(parts);
}

export function buildTar(entries: readonly FixtureEntry[]): Buffer {
  const out: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? '0';
    const data = e.data === undefined ? Buffer.alloc(0) : typeof e.data === 'string' ? Buffer.from(e.data) : e.data;
    if (e.pax && Object.keys(e.pax).length > 0) {
      const recs = paxRecords(e.pax);
      out.push(header('PaxHeaders/x', 'x', recs.length, {}, false), ...padded(recs));
    }
    if (e.gnuLong) {
      const n = Buffer.from(e.name + '\0');
      out.push(header('././@LongLink', 'L', n.length, {}, true), ...padded(n));
      if (e.linkname !== undefined) {
        const l = Buffer.from(e.linkname + '\0');
        out.push(header('././@LongLink', 'K', l.length, {}, true), ...padded(l));
      }
    }
    out.push(header(e.name, type, data.length, e, e.gnuLong ?? false));
    if (data.length) out.push(...padded(data));
  }
  out.push(Buffer.alloc(1024));
  return Buffer.concat(out);
}
