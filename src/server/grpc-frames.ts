// gRPC's length-prefixed message framing (1 flag byte, 4-byte big-endian length, message bytes), used by
// the session client, which speaks gRPC by hand over node:http2 inside the session tunnel.
import { ObdkitError } from '../util/errors.js';

/** Largest message accepted from a session peer; the Go side never sends more than a few MiB at once. */
export const MAX_INBOUND_MESSAGE = 64 << 20;

export function frameMessage(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** Reassembles messages from arbitrary chunk boundaries. */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;

  constructor(private readonly source: string) {}

  /** Adds a chunk and returns every message it completed. */
  push(chunk: Buffer): Buffer[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    const out: Buffer[] = [];
    while (this.pendingBytes >= 5) {
      const head = this.peek(5);
      if (head[0] !== 0) {
        throw new ObdkitError('EPROTO', 'compressed gRPC message received but no compression was negotiated', { ref: this.source });
      }
      const len = head.readUInt32BE(1);
      if (len > MAX_INBOUND_MESSAGE) {
        throw new ObdkitError('EPROTO', `gRPC message of ${len} bytes exceeds the ${MAX_INBOUND_MESSAGE} byte limit`, { ref: this.source });
      }
      if (this.pendingBytes < 5 + len) break;
      const all = this.take(5 + len);
      out.push(all.subarray(5));
    }
    return out;
  }

  /** True when a partial message is still buffered (an error at end of stream). */
  get hasPartial(): boolean {
    return this.pendingBytes > 0;
  }

  private peek(n: number): Buffer {
    if (this.pending[0]!.length >= n) return this.pending[0]!.subarray(0, n);
    const joined = Buffer.concat(this.pending);
    this.pending = [joined];
    return joined.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (this.pending[0]!.length < n) this.pending = [Buffer.concat(this.pending)];
    const first = this.pending[0]!;
    const out = first.subarray(0, n);
    if (first.length === n) this.pending.shift();
    else this.pending[0] = first.subarray(n);
    this.pendingBytes -= n;
    return out;
  }
}
