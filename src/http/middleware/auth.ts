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
  const check = bearerToken(adminToken, 'admin', 'adminToken');
  return async (ctx: Context, next: Next): Promise<void> => {
    if (!adminToken) {
      throw new AppError(
        'admin_disabled',
        'the admin API is disabled: set adminToken in the config',
        { status: 403 },
      );
    }
    check(ctx);
    ctx.state['actor'] = 'admin';
    await next();
  };
}

/** `Authorization: Bearer <metricsToken>` when one is configured; otherwise open. */
export function requireMetricsToken(metricsToken: string | undefined) {
  const check = bearerToken(metricsToken, 'metrics', 'metricsToken');
  return async (ctx: Context, next: Next): Promise<void> => {
    if (metricsToken) check(ctx);
    await next();
  };
}

/** A check of `Authorization: Bearer <token>` against `token`, in constant time; 401 `invalid_{name}_token`. */
function bearerToken(token: string | undefined, name: string, setting: string) {
  const expected = token ? digest(token) : null;
  const code = `invalid_${name}_token`;
  return (ctx: Context): void => {
    const sent = /^Bearer\s+(\S+)\s*$/i.exec(ctx.get('authorization'))?.[1];
    if (!sent)
      throw unauthorized(`missing ${name} token: send "Authorization: Bearer <${setting}>"`, code);
    if (!expected || !timingSafeEqual(digest(sent), expected))
      throw unauthorized(`invalid ${name} token`, code);
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
