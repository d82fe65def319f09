import type { Context, Next } from 'koa';
import { readJsonBody } from '../body.js';

/** Parses a JSON body (size-limited) into ctx.state.body for methods that carry one. */
export function jsonBody(limitBytes: number) {
  return async (ctx: Context, next: Next): Promise<void> => {
    if (ctx.method === 'POST' || ctx.method === 'PUT' || ctx.method === 'PATCH') {
      ctx.state['body'] = ctx.request.length === 0 ? {} : await readJsonBody(ctx, limitBytes);
    }
    await next();
  };
}
