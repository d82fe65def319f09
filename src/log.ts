import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout is for command output). Errors logged as `err` are
 * written whole (type, message, stack, causes) with every URL cut to its host: see
 * serializeError.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino(
    { level, base: { service: 'lingxi', ...bindings }, serializers: { err: serializeError } },
    pino.destination(2),
  );
}

/**
 * pino's error serializer (`type`, `message` and `stack` with their causes appended, and the
 * error's own fields), with every URL cut to scheme and host: an RPC error's cause carries
 * its endpoint's URL, whose path or query often holds an API key. Use it as the `err`
 * serializer of a logger that may log such errors.
 */
export function serializeError(error: unknown): unknown {
  const serialized: unknown = pino.stdSerializers.err(error as Error);
  if (typeof serialized === 'string') return withoutUrlSecrets(serialized);
  if (serialized === null || typeof serialized !== 'object') return serialized;
  try {
    return JSON.parse(
      JSON.stringify(serialized, (_key, value: unknown) =>
        typeof value === 'bigint' ? value.toString() : value,
      ),
      (_key, value: unknown) => (typeof value === 'string' ? withoutUrlSecrets(value) : value),
    ) as unknown;
  } catch {
    // A field that cannot be written as JSON (a circular one): the essentials only.
    const { type, message, stack } = serialized as Record<string, unknown>;
    return {
      type,
      message: withoutUrlSecrets(String(message)),
      stack: withoutUrlSecrets(String(stack)),
    };
  }
}

/** A URL with a host; not a stack frame's `file:///...` path. */
export const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/(?!\/)[^\s"'<>()]+/gi;

/** Each URL in the text as scheme and host (and port): no user, password, path or query. */
export function withoutUrlSecrets(text: string): string {
  return text.replace(URL_IN_TEXT, (found) => {
    try {
      const url = new URL(found);
      return url.host ? `${url.protocol}//${url.host}` : `${url.protocol}//`;
    } catch {
      return '(a URL)';
    }
  });
}
