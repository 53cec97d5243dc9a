// Structured logging. Logs go to stderr so stdout stays clean for data (`layer cat`, JSON output).
import { pino, type Logger } from 'pino';

const level = process.env.OBDKIT_LOG_LEVEL ?? 'info';

export const log: Logger = pino({ level, base: { app: 'obdkit' } }, pino.destination({ dest: 2, sync: true }));

export function child(bindings: Record<string, string | number>): Logger {
  return log.child(bindings);
}
