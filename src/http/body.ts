import getRawBody from 'raw-body';
import type { Context } from 'koa';
import { AppError, badRequest } from '../errors.js';

/** Reads a JSON body of at most `limitBytes`: 413 when larger, 400 when not JSON. */
export async function readJsonBody(ctx: Context, limitBytes: number): Promise<unknown> {
  let text: string;
  try {
    const length = ctx.get('content-length');
    text = await getRawBody(ctx.req, {
      limit: limitBytes,
      encoding: 'utf8',
      ...(length ? { length } : {}),
    });
  } catch (error) {
    const type = (error as { type?: string }).type;
    if (type === 'entity.too.large') {
      throw new AppError(
        'request_too_large',
        `the request body is larger than ${limitBytes} bytes`,
        { status: 413 },
      );
    }
    throw badRequest(`could not read the request body: ${(error as Error).message}`);
  }
  if (text.trim() === '') throw badRequest('the request body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch {
    throw badRequest('the request body is not valid JSON');
  }
}
