import type { Context, Next } from 'koa';
import { LedgerError } from '../../ledger/index.js';
import { isDatabaseUnavailable } from '../db/unavailable.js';
import { AppError } from '../errors.js';

export interface ErrorBody {
  error: { message: string; type: string; code: string | null; param: string | null };
}

/** How each ledger error code answers over HTTP. */
const LEDGER_STATUS: Record<string, { status: number; type?: string; code?: string }> = {
  invalid_amount: { status: 400 },
  unknown_currency: { status: 400 },
  currency_mismatch: { status: 400 },
  invalid_entry: { status: 400 },
  unbalanced_entry: { status: 400 },
  invalid_account: { status: 400 },
  invalid_cursor: { status: 400 },
  invalid_limit: { status: 400 },
  unknown_account: { status: 404 },
  insufficient_funds: { status: 402, type: 'insufficient_quota', code: 'insufficient_balance' },
  idempotency_conflict: { status: 409 },
  hold_not_found: { status: 404 },
  hold_not_pending: { status: 409 },
  hold_exceeded: { status: 409 },
  entry_not_found: { status: 404 },
  already_reversed: { status: 409 },
};

/** The contract's error body and status for any thrown value. */
export function toErrorResponse(error: unknown): {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
} {
  if (error instanceof AppError) {
    return {
      status: error.status,
      headers: error.headers,
      body: {
        error: { message: error.message, type: error.type, code: error.code, param: error.param },
      },
    };
  }
  if (error instanceof LedgerError && LEDGER_STATUS[error.code]) {
    const mapped = LEDGER_STATUS[error.code]!;
    return {
      status: mapped.status,
      headers: {},
      body: {
        error: {
          message: error.shortMessage,
          type: mapped.type ?? 'invalid_request_error',
          code: mapped.code ?? error.code,
          param: error.param,
        },
      },
    };
  }
  const status = (error as { status?: unknown; expose?: unknown }).status;
  if (
    typeof status === 'number' &&
    status >= 400 &&
    status < 500 &&
    (error as { expose?: unknown }).expose
  ) {
    // Errors Koa and its body parsers raise for malformed requests (413, 415, 400...).
    const message = (error as Error).message;
    const code = status === 413 ? 'request_too_large' : 'invalid_request';
    return {
      status,
      headers: {},
      body: { error: { message, type: 'invalid_request_error', code, param: null } },
    };
  }
  if (isDatabaseUnavailable(error)) {
    // A failover or a network blip: worth retrying, unlike a fault of ours.
    return {
      status: 503,
      headers: { 'retry-after': '1' },
      body: {
        error: {
          message: 'the service cannot reach its database at the moment; retry in a second',
          type: 'api_error',
          code: 'service_unavailable',
          param: null,
        },
      },
    };
  }
  return {
    status: 500,
    headers: {},
    body: {
      error: {
        message: 'internal error; the request id identifies it in our logs',
        type: 'api_error',
        code: 'internal_error',
        param: null,
      },
    },
  };
}

/** The first middleware: every error becomes the contract's shape; unexpected ones are logged. */
export async function errorMiddleware(ctx: Context, next: Next): Promise<void> {
  try {
    await next();
    if (ctx.status === 404 && ctx.body === undefined) {
      throw new AppError('not_found', `no route for ${ctx.method} ${ctx.path}`, { status: 404 });
    }
    // The routers' allowedMethods() answer a known path with another method in plain text;
    // the Allow header they set stays.
    if ((ctx.status === 405 || ctx.status === 501) && ctx.body === undefined) {
      const allow = ctx.response.get('allow');
      throw new AppError(
        ctx.status === 405 ? 'method_not_allowed' : 'method_not_implemented',
        `${ctx.method} is not a method of ${ctx.path}${allow ? `; use ${allow}` : ''}`,
        { status: ctx.status },
      );
    }
  } catch (error) {
    const { status, body, headers } = toErrorResponse(error);
    if (status >= 500) ctx.state['log']?.error({ err: error }, 'request failed');
    ctx.status = status;
    ctx.set(headers);
    ctx.body = body;
  }
}
