// Small adapters from async functions to grpc-js handlers, so every service method reports errors the
// same way (grpc-errors.ts) and logs them once.
import type { handleUnaryCall, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { log } from '../util/log.js';
import { ObdkitError } from '../util/errors.js';
import { toServiceError } from './grpc-errors.js';

export function unaryHandler<Req, Res>(
  method: string,
  fn: (call: ServerUnaryCall<Req, Res>, signal: AbortSignal) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    // Go clients reset a stream once they have read the answer, which grpc-js reports as 'cancelled';
    // only a cancellation before we answered means the client gave up.
    const ac = new AbortController();
    let answered = false;
    call.on('cancelled', () => {
      if (!answered) ac.abort(new ObdkitError('ECANCELED', `${method} cancelled by the client`));
    });
    fn(call, ac.signal).then(
      (res) => {
        answered = true;
        callback(null, res);
      },
      (err: unknown) => {
        answered = true;
        const se = toServiceError(err);
        log.debug({ method, code: se.code, err: se.details }, 'request failed');
        callback(se);
      },
    );
  };
}
