/**
 * Application errors: a stable `code`, the HTTP status and OpenAI-style `type` they answer
 * with, and a short message a user can act on. The HTTP error middleware and the CLI map
 * these (and the ledger's LedgerError) to their answers; nothing else reaches a client.
 */
export class AppError extends Error {
  readonly code: string;
  readonly status: number;
  readonly type: string;
  readonly param: string | null;
  readonly headers: Record<string, string>;

  constructor(
    code: string,
    message: string,
    options: {
      status?: number;
      type?: string;
      param?: string | null;
      headers?: Record<string, string>;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = options.status ?? 400;
    this.type = options.type ?? (this.status >= 500 ? 'api_error' : 'invalid_request_error');
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
  }
}

export const badRequest = (
  message: string,
  param: string | null = null,
  code = 'invalid_request',
) => new AppError(code, message, { status: 400, param });

export const notFound = (message: string, code = 'not_found', param: string | null = null) =>
  new AppError(code, message, { status: 404, param });

export const conflict = (message: string, code = 'conflict', param: string | null = null) =>
  new AppError(code, message, { status: 409, param });

export const unauthorized = (message: string, code = 'invalid_api_key') =>
  new AppError(code, message, { status: 401, type: 'invalid_request_error' });

export const forbidden = (message: string, code = 'forbidden') =>
  new AppError(code, message, { status: 403, type: 'invalid_request_error' });
