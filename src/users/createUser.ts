import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { badRequest, conflict, notFound } from '../errors.js';
import { parseTelegramId } from './telegramId.js';
import { isUserId } from './userId.js';

export interface CreateUserParameters {
  /** Digits, or a JSON number while it is exact (see parseTelegramId). */
  telegramId: unknown;
  username?: string | null;
}

export interface CreateUserResult {
  id: string;
}

/** Creates a user; a Telegram id can belong to one user only. */
export async function createUser(
  db: Kysely<Database>,
  params: CreateUserParameters,
): Promise<CreateUserResult> {
  const telegramId = parseTelegramId(params.telegramId);
  const username = params.username ?? null;
  if (
    username !== null &&
    (typeof username !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(username))
  ) {
    throw badRequest('username must be 1-64 letters, digits or underscores', 'username');
  }
  const row = await db
    .insertInto('users')
    .values({ telegram_id: telegramId, username })
    .onConflict((oc) => oc.column('telegram_id').doNothing())
    .returning('id')
    .executeTakeFirst();
  if (!row)
    throw conflict(
      `a user with Telegram id ${telegramId} already exists`,
      'user_exists',
      'telegramId',
    );
  return { id: row.id };
}

/** Throws a 404-style error unless the user exists; returns its status. */
export async function requireUser(
  db: Kysely<Database>,
  userId: string,
): Promise<{ id: string; status: string }> {
  if (!isUserId(userId))
    throw notFound(`user ${userId.slice(0, 40)} does not exist`, 'user_not_found', 'user');
  const row = await db
    .selectFrom('users')
    .select(['id', 'status'])
    .where('id', '=', userId)
    .executeTakeFirst();
  if (!row) throw notFound(`user ${userId} does not exist`, 'user_not_found', 'user');
  return row;
}
