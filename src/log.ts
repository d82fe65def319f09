import pino, { type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stderr (stdout is for command output). */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'lingxi', ...bindings } }, pino.destination(2));
}
