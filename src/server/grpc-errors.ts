// Turning internal errors into gRPC statuses the build clients print well: build failures go out as
// Unknown (printed bare), cancellations as Cancelled, and a status the client itself returned through
// LLBBridge.Return keeps its code, message and details.
import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { ObdkitError } from '../util/errors.js';
import { BuildFailure } from './backend.js';
import { Status as RpcStatus } from './gen/google/rpc/status.js';
import { SessionCallError } from './session-client.js';

export class GrpcStatusError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly rpcStatus?: RpcStatus,
  ) {
    super(message);
    this.name = 'GrpcStatusError';
  }
}

export function unimplemented(what: string): GrpcStatusError {
  return new GrpcStatusError(GrpcStatus.UNIMPLEMENTED, `${what} is not supported by obdkit`);
}

function isAbort(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.name === 'AbortError' || (err instanceof ObdkitError && err.code === 'ECANCELED'))
  );
}

/** The error object grpc-js sends for `err`. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  let code: number = GrpcStatus.UNKNOWN;
  let details: string;
  let rpc: RpcStatus | undefined;
  if (err instanceof GrpcStatusError) {
    code = err.code;
    details = err.message;
    rpc = err.rpcStatus;
  } else if (err instanceof BuildFailure) {
    code = err.grpcCode;
    details = err.message;
  } else if (isAbort(err)) {
    code = GrpcStatus.CANCELLED;
    details = err instanceof Error ? err.message : 'cancelled';
  } else if (err instanceof SessionCallError) {
    code = err.grpcCode === GrpcStatus.CANCELLED ? GrpcStatus.CANCELLED : GrpcStatus.UNKNOWN;
    details = err.message;
  } else if (err instanceof Error) {
    details = err.message;
  } else {
    details = String(err);
  }
  const metadata = new Metadata();
  if (rpc && rpc.details.length > 0) {
    metadata.set('grpc-status-details-bin', Buffer.from(RpcStatus.encode(rpc).finish()));
  }
  return { code, details, metadata };
}

/** The google.rpc.Status for an error (what LLBBridge.Return carries). */
export function toRpcStatus(err: unknown): RpcStatus {
  const se = toServiceError(err);
  return { code: se.code ?? GrpcStatus.UNKNOWN, message: se.details ?? '', details: [] };
}
