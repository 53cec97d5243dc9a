// A stack of layers seen as one virtual disk: for every sector the topmost layer holding a record for it
// wins; a zeroed record reads as zeros and hides everything below; sectors no layer maps read as zeros.
// The read-only lowers never change, so their merged index is built once (bottom to top, newer records
// overlaying older ones, the layer number kept in the record's tag) and every lookup is a binary search.
// An optional live upper layer (a RwLayer being written) is consulted first, on every lookup.
// The block device (worker/device) serves reads through `resolve`/`read`.
import { FormatError, ObdkitError } from '../util/errors.js';
import { type LayerView, checkSectorAligned } from './lsmt-layer.js';
import { type Mapping, SECTOR_SIZE } from './segment.js';
import { SegmentIndex } from './segment-index.js';

/** The reference stacks at most this many layers. */
export const MAX_STACK_LAYERS = 255;

/** A layer whose mappings change while it is stacked: looked up live rather than merged once. */
export interface LiveLayerView extends LayerView {
  /** Records intersecting a sector range, trimmed to it. */
  lookup(offset: number, length: number): Mapping[];
}

/** One piece of a resolved byte range. All fields are in bytes. */
export interface StackPiece {
  /** Start on the virtual disk. */
  offset: number;
  length: number;
  /** Index of the owning layer (0 = bottom; the live upper, if any, is `lowers.length`); null = unmapped. */
  layer: number | null;
  /** The owning record is zeroed: reads as zeros. */
  zeroed: boolean;
  /** Byte position in the owning layer's `data` (data pieces only). */
  moffset?: number;
}

export class LayerStack {
  readonly layers: readonly LayerView[];
  private readonly merged = new SegmentIndex();
  private readonly upper: LiveLayerView | undefined;

  /** `lowers[0]` is the bottom layer. */
  constructor(lowers: readonly LayerView[], opts: { upper?: LiveLayerView } = {}) {
    const total = lowers.length + (opts.upper ? 1 : 0);
    if (total > MAX_STACK_LAYERS) {
      throw new ObdkitError('ELAYERS', `a stack holds at most ${MAX_STACK_LAYERS} layers, got ${total}`);
    }
    this.layers = opts.upper ? [...lowers, opts.upper] : [...lowers];
    this.upper = opts.upper;
    lowers.forEach((layer, i) => {
      for (const m of layer.mappings()) this.merged.insert({ ...m, tag: i });
    });
  }

  /** The topmost non-zero virtual size (0 if every layer says 0). */
  get virtualSize(): number {
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const v = this.layers[i]!.virtualSize;
      if (v) return v;
    }
    return 0;
  }

  /** Records of the merged lowers (sectors), with the owning lower's index as `tag`. */
  lowerMappings(): Mapping[] {
    return this.merged.toArray();
  }

  /** Who owns each part of [offset, offset+length) (bytes, 512-aligned): contiguous pieces covering it. */
  resolve(offset: number, length: number): StackPiece[] {
    checkSectorAligned(offset, length, 'stack read');
    const out: StackPiece[] = [];
    const start = offset / SECTOR_SIZE;
    const end = start + length / SECTOR_SIZE;
    if (this.upper) {
      const upperLayer = this.layers.length - 1;
      let cursor = start;
      for (const m of this.upper.lookup(start, end - start)) {
        if (m.offset > cursor) this.resolveLowers(cursor, m.offset, out);
        out.push(piece(m, upperLayer));
        cursor = m.offset + m.length;
      }
      if (cursor < end) this.resolveLowers(cursor, end, out);
    } else {
      this.resolveLowers(start, end, out);
    }
    return out;
  }

  /** The bytes of the virtual disk in [offset, offset+length) (512-aligned). */
  read(offset: number, length: number): Buffer {
    const buf = Buffer.alloc(length);
    for (const p of this.resolve(offset, length)) {
      if (p.layer === null || p.zeroed || p.moffset === undefined) continue;
      const data = this.layers[p.layer]!.data;
      const got = data.pread(p.moffset, p.length);
      if (got.length !== p.length) {
        throw new FormatError(`layer ${p.layer} ends inside the data for virtual bytes [${p.offset}, +${p.length})`, { file: data.name, offset: p.moffset + got.length });
      }
      got.copy(buf, p.offset - offset);
    }
    return buf;
  }

  private resolveLowers(start: number, end: number, out: StackPiece[]): void {
    let cursor = start;
    for (const m of this.merged.lookup(start, end - start)) {
      if (m.offset > cursor) out.push(hole(cursor, m.offset));
      out.push(piece(m, m.tag));
      cursor = m.offset + m.length;
    }
    if (cursor < end) out.push(hole(cursor, end));
  }
}

function piece(m: Mapping, layer: number): StackPiece {
  const p: StackPiece = { offset: m.offset * SECTOR_SIZE, length: m.length * SECTOR_SIZE, layer, zeroed: m.zeroed };
  if (!m.zeroed) p.moffset = m.moffset * SECTOR_SIZE;
  return p;
}

function hole(start: number, end: number): StackPiece {
  return { offset: start * SECTOR_SIZE, length: (end - start) * SECTOR_SIZE, layer: null, zeroed: false };
}
