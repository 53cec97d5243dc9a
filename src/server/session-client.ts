// The daemon's gRPC client inside one session tunnel. The build client serves its attachable services
// (FileSync, FileSend, Auth, Secrets, Health) over HTTP/2 on its end of the Control.Session stream; this
// module speaks HTTP/2 (node:http2) on our end and frames gRPC calls by hand, so calls can carry raw
// bytes where a declared message type does not match the wire (FileSend). Higher-level services live in
// session-services.ts, filesync-receive.ts and filesend.ts.
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { ObdkitError } from '../util/errors.js';
import { log } from '../util/log.js';
import { FrameDecoder, frameMessage } from './grpc-frames.js';
import { Status as RpcStatus } from './gen/google/rpc/status.js';

export interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

/** Request metadata: a string array becomes one header field per value, as Go's gRPC server expects. */
export type CallMetadata = Record<string, string | string[]>;

/** A failed call to a service of the build client; `grpcCode` is the code the client answered with. */
export class SessionCallError extends ObdkitError {
  constructor(
    readonly grpcCode: number,
    readonly method: string,
    readonly grpcMessage: string,
    readonly details?: RpcStatus,
  ) {
    super('ESESSIONCALL', `${method}: ${grpcMessage || GrpcStatus[grpcCode] || 'failed'}`, { grpcCode });
    this.name = 'SessionCallError';
  }
}

export interface CallStatus {
  code: number;
  message: string;
  details?: RpcStatus;
}

// Large enough that a whole build context in flight does not stall on WINDOW_UPDATE round trips, which
// here travel through the outer gRPC stream.
const STREAM_WINDOW = 8 << 20;
const SESSION_WINDOW = 32 << 20;

/** One gRPC call in flight over the tunnel, carrying raw message bytes in both directions. */
export class SessionCall {
  readonly status: Promise<CallStatus>;
  private settled = false;
  private resolveStatus!: (s: CallStatus) => void;
  private readonly decoder: FrameDecoder;

  constructor(
    readonly method: string,
    private readonly stream: http2.ClientHttp2Stream,
    signal?: AbortSignal,
  ) {
    this.decoder = new FrameDecoder(method);
    this.status = new Promise((resolve) => (this.resolveStatus = resolve));
    // The status is awaited through messages()/finish(); an unobserved rejection would be noise.
    stream.on('response', (headers) => {
      if (headers['grpc-status'] !== undefined) this.settle(headers);
    });
    stream.on('trailers', (trailers) => this.settle(trailers));
    stream.on('error', (err: Error) => this.settleWith(GrpcStatus.UNAVAILABLE, `${method}: ${err.message}`));
    stream.on('close', () => this.settleWith(GrpcStatus.UNAVAILABLE, 'stream closed without a gRPC status'));
    if (signal) {
      const onAbort = () => this.cancel();
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      void this.status.finally(() => signal.removeEventListener('abort', onAbort));
    }
  }

  /** Sends one message, waiting while the peer's flow-control window is full. */
  async send(message: Uint8Array): Promise<void> {
    if (this.stream.destroyed || this.stream.writableEnded) {
      throw new SessionCallError(GrpcStatus.UNAVAILABLE, this.method, 'call already closed');
    }
    if (!this.stream.write(frameMessage(message))) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          this.stream.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          this.stream.off('drain', onDrain);
          reject(new SessionCallError(GrpcStatus.UNAVAILABLE, this.method, 'call closed while sending'));
        };
        this.stream.once('drain', onDrain);
        this.stream.once('close', onClose);
      });
    }
  }

  /** Half-closes our side: no more messages from us. */
  end(): void {
    if (!this.stream.writableEnded) this.stream.end();
  }

  cancel(): void {
    if (!this.stream.destroyed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
    this.settleWith(GrpcStatus.CANCELLED, 'cancelled');
  }

  /** The peer's messages in order; throws the call's error status once the stream ends. */
  async *messages(): AsyncGenerator<Buffer> {
    for await (const chunk of this.stream as AsyncIterable<Buffer>) {
      for (const msg of this.decoder.push(chunk)) yield msg;
    }
    if (this.decoder.hasPartial) throw new SessionCallError(GrpcStatus.INTERNAL, this.method, 'stream ended inside a message');
    await this.finish();
  }

  /** Waits for the final status and throws unless it is OK. */
  async finish(): Promise<void> {
    const st = await this.status;
    if (st.code !== GrpcStatus.OK) throw new SessionCallError(st.code, this.method, st.message, st.details);
  }

  private settle(headers: http2.IncomingHttpHeaders): void {
    const codeRaw = headers['grpc-status'];
    const code = Number(Array.isArray(codeRaw) ? codeRaw[0] : (codeRaw ?? GrpcStatus.UNKNOWN));
    const msgRaw = headers['grpc-message'];
    let message = Array.isArray(msgRaw) ? msgRaw.join(',') : (msgRaw ?? '');
    try {
      message = decodeURIComponent(message);
    } catch {
      // Not percent-encoded after all; keep it as sent.
    }
    let details: RpcStatus | undefined;
    const det = headers['grpc-status-details-bin'];
    if (typeof det === 'string' && det.length > 0) {
      try {
        details = RpcStatus.decode(Buffer.from(det, 'base64'));
      } catch {
        details = undefined;
      }
    }
    this.settleWith(Number.isFinite(code) ? code : GrpcStatus.UNKNOWN, message, details);
  }

  private settleWith(code: number, message: string, details?: RpcStatus): void {
    if (this.settled) return;
    this.settled = true;
    this.resolveStatus(details ? { code, message, details } : { code, message });
  }
}

/** The HTTP/2 client side of one session; created the moment the Session stream is accepted. */
export class SessionClient {
  readonly closed: Promise<void>;
  private readonly h2: http2.ClientHttp2Session;
  private readonly methodSet: Set<string>;

  constructor(
    readonly id: string,
    readonly sharedKey: string,
    methods: readonly string[],
    tunnel: Duplex,
  ) {
    this.methodSet = new Set(methods.map((m) => m.trim().toLowerCase()).filter((m) => m.length > 0));
    this.h2 = http2.connect('http://localhost', {
      createConnection: () => tunnel,
      settings: { initialWindowSize: STREAM_WINDOW, enablePush: false },
      maxSessionMemory: 256,
    });
    this.h2.on('connect', () => {
      try {
        this.h2.setLocalWindowSize(SESSION_WINDOW);
      } catch {
        // Already closing; the window no longer matters.
      }
    });
    this.closed = new Promise((resolve) => {
      this.h2.once('close', () => resolve());
    });
    this.h2.on('error', (err: Error) => log.debug({ session: id, err: err.message }, 'session transport error'));
  }

  /** The full method paths the client said it serves, lower-cased. */
  get methods(): ReadonlySet<string> {
    return this.methodSet;
  }

  has(method: string): boolean {
    return this.methodSet.has(method.toLowerCase());
  }

  get isClosed(): boolean {
    return this.h2.closed || this.h2.destroyed;
  }

  /** Opens a call; the client must have declared `method`. */
  open(method: string, metadata: CallMetadata = {}, signal?: AbortSignal): SessionCall {
    if (!this.has(method)) {
      throw new SessionCallError(GrpcStatus.UNIMPLEMENTED, method, `the build client does not offer ${method} in session ${this.id}`);
    }
    if (this.isClosed) throw new SessionCallError(GrpcStatus.UNAVAILABLE, method, `session ${this.id} is closed`);
    const headers: http2.OutgoingHttpHeaders = {
      ':method': 'POST',
      ':path': method,
      ':scheme': 'http',
      'content-type': 'application/grpc',
      te: 'trailers',
    };
    for (const [k, v] of Object.entries(metadata)) headers[k.toLowerCase()] = v;
    const stream = this.h2.request(headers, { endStream: false });
    return new SessionCall(method, stream, signal);
  }

  async unary<Req, Res>(
    method: string,
    reqCodec: MessageCodec<Req>,
    resCodec: MessageCodec<Res>,
    request: Req,
    opts: { metadata?: CallMetadata; signal?: AbortSignal } = {},
  ): Promise<Res> {
    const call = this.open(method, opts.metadata, opts.signal);
    await call.send(reqCodec.encode(request).finish());
    call.end();
    let response: Res | undefined;
    for await (const msg of call.messages()) {
      if (response === undefined) response = resCodec.decode(msg);
    }
    if (response === undefined) throw new SessionCallError(GrpcStatus.INTERNAL, method, 'no response message');
    return response;
  }

  close(): void {
    if (!this.isClosed) this.h2.close();
  }

  destroy(): void {
    if (!this.h2.destroyed) this.h2.destroy();
  }
}
