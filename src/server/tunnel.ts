// A byte-stream Duplex over the Control.Session bidi call. The client runs an HTTP/2 server on its end of
// this pipe; the daemon's HTTP/2 client (session-client.ts) runs on this Duplex. BytesMessage boundaries
// carry no meaning: the bytes of each direction form one continuous stream.
import { Duplex } from 'node:stream';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { BytesMessage } from './gen/buildkit/control.js';

/** Keeps each message well under the 4 MiB the client's gRPC server accepts. */
const MAX_CHUNK = 3 << 20;

export class SessionTunnel extends Duplex {
  private callEnded = false;

  constructor(private readonly call: ServerDuplexStream<BytesMessage, BytesMessage>) {
    super({ allowHalfOpen: true });
    call.on('data', (msg: BytesMessage) => {
      if (msg.data.length === 0) return;
      if (!this.push(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.length))) call.pause();
    });
    call.on('end', () => this.push(null));
    call.on('error', (err: Error) => this.destroy(err));
    call.on('cancelled', () => this.destroy(new Error('session stream cancelled by the client')));
  }

  override _read(): void {
    this.call.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.callEnded) {
      cb(new Error('session stream already ended'));
      return;
    }
    let ok = true;
    for (let off = 0; off < chunk.length; off += MAX_CHUNK) {
      ok = this.call.write({ data: chunk.subarray(off, off + MAX_CHUNK) });
    }
    if (ok) cb();
    else this.call.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.endCall();
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.endCall();
    cb(err);
  }

  private endCall(): void {
    if (this.callEnded) return;
    this.callEnded = true;
    try {
      this.call.end();
    } catch {
      // The call may already be cancelled; nothing left to close.
    }
  }
}
