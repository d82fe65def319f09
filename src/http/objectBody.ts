import type { Context } from 'koa';
import { badRequest } from '../errors.js';

/** The parsed JSON body (see jsonBody) when it is an object; a 400 for null, arrays and scalars. */
export function objectBody(ctx: Context): Record<string, unknown> {
  const body: unknown = ctx.state['body'];
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest('the request body must be a JSON object');
  return body as Record<string, unknown>;
}
