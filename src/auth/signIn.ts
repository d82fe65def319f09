import { sql, type Kysely } from 'kysely';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/schema.js';
import { AppError, badRequest } from '../errors.js';
import { assertAccountUsable, createSession, type CreatedSession } from './sessions.js';
import { verifyTelegramLogin, type TelegramIdentity } from './telegram.js';
import { parseTelegramId } from '../users/telegramId.js';

export interface SignInResult extends CreatedSession {
  userId: string;
  /** True when this sign-in created the user. */
  created: boolean;
}

/**
 * Signs a person in with a Telegram Login Widget payload: verifies it, refuses one that
 * already signed someone in (the payload's hash is kept until the payload is too old to
 * accept anyway), creates or updates the user from what Telegram says, and starts a session.
 * All of it in one transaction: a refused sign-in leaves nothing behind.
 */
export async function signInWithTelegram(
  db: Kysely<Database>,
  config: Pick<Config, 'telegram' | 'sessions'>,
  payload: unknown,
  now: Date,
): Promise<SignInResult> {
  const { botToken, maxAuthAgeS, maxClockSkewS } = config.telegram;
  if (!botToken) throw telegramNotConfigured();
  const identity = verifyTelegramLogin({ payload, botToken, maxAuthAgeS, maxClockSkewS, now });
  return db.transaction().execute(async (trx) => {
    await claimPayload(trx, identity, maxAuthAgeS + maxClockSkewS, now);
    const user = await upsertTelegramUser(trx, identity, now);
    assertAccountUsable(user.status);
    const session = await createSession(trx, {
      userId: user.id,
      method: 'telegram',
      ttlS: config.sessions.ttlS,
      now,
    });
    return { ...session, userId: user.id, created: user.created };
  });
}

/**
 * The development sign-in: any Telegram id, no proof. Only for a service whose config turns
 * it on (`telegram.devSignIn`, never with a bot token); the caller (the route) also keeps it
 * to loopback clients.
 */
export async function signInDev(
  db: Kysely<Database>,
  config: Pick<Config, 'telegram' | 'sessions'>,
  params: { telegramId: unknown; username?: unknown },
  now: Date,
): Promise<SignInResult> {
  if (!config.telegram.devSignIn || config.telegram.botToken) throw devSignInDisabled();
  const telegramId = parseTelegramId(params.telegramId);
  const username = params.username ?? null;
  if (username !== null && (typeof username !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(username)))
    throw badRequest('username must be 1-64 letters, digits or underscores', 'username');
  return db.transaction().execute(async (trx) => {
    const user = await trx
      .insertInto('users')
      .values({ telegram_id: telegramId, username, last_login_at: now })
      .onConflict((oc) =>
        oc.column('telegram_id').doUpdateSet({
          username: sql`coalesce(excluded.username, users.username)`,
          last_login_at: now,
          updated_at: now,
        }),
      )
      .returning(['id', 'status', sql<boolean>`xmax = 0`.as('created')])
      .executeTakeFirstOrThrow();
    assertAccountUsable(user.status);
    const session = await createSession(trx, {
      userId: user.id,
      method: 'dev',
      ttlS: config.sessions.ttlS,
      now,
    });
    return { ...session, userId: user.id, created: user.created };
  });
}

export function telegramNotConfigured(): AppError {
  return new AppError(
    'telegram_not_configured',
    'Telegram sign-in is not configured on this service (telegram.botToken)',
    { status: 503 },
  );
}

export function devSignInDisabled(): AppError {
  return new AppError('not_found', 'no route for POST /api/auth/dev', { status: 404 });
}

async function claimPayload(
  trx: Kysely<Database>,
  identity: TelegramIdentity,
  lifetimeS: number,
  now: Date,
): Promise<void> {
  const expiresAt = new Date((identity.authDateS + lifetimeS) * 1000);
  // A row whose payload has expired may be taken again (the freshness check refuses such a
  // payload first anyway, unless the configured age grew since).
  const claimed = await trx
    .insertInto('telegram_login_replays')
    .values({ payload_hash: identity.payloadHash, expires_at: expiresAt })
    .onConflict((oc) =>
      oc
        .column('payload_hash')
        .doUpdateSet({ expires_at: expiresAt })
        .where('telegram_login_replays.expires_at', '<', now),
    )
    .returning('payload_hash')
    .executeTakeFirst();
  if (!claimed)
    throw new AppError(
      'telegram_auth_replayed',
      'this Telegram login was already used; sign in again',
      { status: 401, type: 'invalid_request_error' },
    );
}

async function upsertTelegramUser(
  trx: Kysely<Database>,
  identity: TelegramIdentity,
  now: Date,
): Promise<{ id: string; status: string; created: boolean }> {
  const profile = {
    username: identity.username,
    first_name: identity.firstName,
    last_name: identity.lastName,
    photo_url: identity.photoUrl,
    last_login_at: now,
  };
  return trx
    .insertInto('users')
    .values({ telegram_id: identity.telegramId, ...profile })
    .onConflict((oc) => oc.column('telegram_id').doUpdateSet({ ...profile, updated_at: now }))
    .returning(['id', 'status', sql<boolean>`xmax = 0`.as('created')])
    .executeTakeFirstOrThrow();
}
