// grpc.health.v1.Health on the main port: SERVING while the daemon accepts builds, NOT_SERVING once it
// begins shutting down.
import type { HealthServer } from './gen/grpc/health/v1/health.js';
import { HealthCheckResponse_ServingStatus as Serving } from './gen/grpc/health/v1/health.js';

export function healthService(isServing: () => boolean): HealthServer {
  const current = () => (isServing() ? Serving.SERVING : Serving.NOT_SERVING);
  return {
    check: (_call, cb) => cb(null, { status: current() }),
    watch: (call) => {
      call.write({ status: current() });
      call.on('cancelled', () => undefined);
    },
  };
}
