import type { Context, Next } from 'koa';
import { authenticateSession, SESSION_TOKEN_PREFIX } from '../../auth/sessions.js';
import { forbidden, unauthorized } from '../../errors.js';
import type { Services } from '../../services.js';

/** Who is calling the account API; lands in `ctx.state.account`. */
export interface AccountPrincipal {
  userId: string;
  via: 'api_key' | 'session';
  keyId?: string;
  sessionId?: string;
  /**
   * True for an API key with a spend limit or a model list: such a key may read the
   * account but not mint keys, revoke them or erase the account (that would escape its limits).
   */
  restricted: boolean;
}

/**
 * `Authorization: Bearer <api key or session token>` for the account API. API keys (`lx-`)
 * go through the gateway's KeyAuthenticator (cached; revocation and suspension reach it by
 * NOTIFY); session tokens (`lxs-`) are read from the database on every request. Revoked keys,
 * expired or revoked sessions are 401; suspended or erased accounts 403.
 * Sets `ctx.state.account` (an AccountPrincipal) and `ctx.state.actor` = `user:<id>`.
 */
export function accountAuth(services: Services) {
  const { db } = services.runtime.database;
  return async (ctx: Context, next: Next): Promise<void> => {
    const header = ctx.get('authorization');
    if (!header)
      throw unauthorized(
        'missing credentials: send "Authorization: Bearer <API key or session token>"',
        'missing_credentials',
      );
    const token = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    if (!token)
      throw unauthorized(
        'malformed Authorization header: send "Bearer <API key or session token>"',
        'invalid_credentials',
      );
    let account: AccountPrincipal;
    if (token.startsWith(SESSION_TOKEN_PREFIX)) {
      const session = await authenticateSession(db, token);
      account = {
        userId: session.userId,
        via: 'session',
        sessionId: session.sessionId,
        restricted: false,
      };
    } else {
      const caller = await services.keys.authenticate(`Bearer ${token}`);
      account = {
        userId: caller.userId,
        via: 'api_key',
        keyId: caller.keyId,
        restricted: caller.spendLimitUsd !== null || caller.allowedModels !== null,
      };
    }
    ctx.state['account'] = account;
    ctx.state['actor'] = `user:${account.userId}`;
    await next();
  };
}

/**
 * Restricted keys only read under /api/me: anything else is 403 `key_restricted` before the
 * Idempotency-Key middleware runs, so such a key never gets the answer kept for a key
 * creation its owner made with the same Idempotency-Key (a 201 where it must get a 403).
 */
export async function restrictedKeysOnlyRead(ctx: Context, next: Next): Promise<void> {
  if (!['GET', 'HEAD', 'OPTIONS'].includes(ctx.method))
    requireUnrestricted(currentAccount(ctx), 'create or revoke keys or erase the account');
  await next();
}

/** The principal set by accountAuth (an assertion: the route must sit behind it). */
export function currentAccount(ctx: Context): AccountPrincipal {
  const account = ctx.state['account'] as AccountPrincipal | undefined;
  if (!account) throw new Error('accountAuth must run before this route');
  return account;
}

/** 403 for an API key whose limits would be escaped by this action (every /api/me write: restrictedKeysOnlyRead). */
function requireUnrestricted(account: AccountPrincipal, action: string): void {
  if (account.restricted)
    throw forbidden(
      `an API key with a spend limit or a model list cannot ${action}; use a session or an unrestricted key`,
      'key_restricted',
    );
}
