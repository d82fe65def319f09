import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { AppError, unauthorized } from '../../errors.js';
import type { KeyAuthenticator } from '../../keys/keyAuthenticator.js';

/** `Authorization: Bearer <api key>`; the caller lands in ctx.state.caller. */
export function requireApiKey(keys: KeyAuthenticator) {
  return async (ctx: Context, next: Next): Promise<void> => {
    ctx.state['caller'] = await keys.authenticate(ctx.get('authorization'));
    await next();
  };
}

/** `Authorization: Bearer <adminToken>`, compared in constant time. Without a configured token the admin API is off. */
export function requireAdmin(adminToken: string | undefined) {
  const expected = adminToken ? digest(adminToken) : null;
  return async (ctx: Context, next: Next): Promise<void> => {
    if (!expected) {
      throw new AppError(
        'admin_disabled',
        'the admin API is disabled: set adminToken in the config',
        { status: 403 },
      );
    }
    const token = /^Bearer\s+(\S+)\s*$/i.exec(ctx.get('authorization'))?.[1];
    if (!token)
      throw unauthorized(
        'missing admin token: send "Authorization: Bearer <adminToken>"',
        'invalid_admin_token',
      );
    if (!timingSafeEqual(digest(token), expected))
      throw unauthorized('invalid admin token', 'invalid_admin_token');
    ctx.state['actor'] = 'admin';
    await next();
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
