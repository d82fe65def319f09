import type { Kysely, Transaction } from 'kysely';
import type { Database } from '../db/schema.js';
import { AppError, badRequest, conflict, notFound } from '../errors.js';
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

/**
 * Creates a user; a Telegram id can belong to one user only. `within` runs in the transaction
 * that inserts the user (its audit record, the Idempotency-Key answer): committed with it or
 * not at all.
 */
export async function createUser(
  db: Kysely<Database>,
  params: CreateUserParameters,
  options: { within?: (trx: Transaction<Database>, user: CreateUserResult) => Promise<void> } = {},
): Promise<CreateUserResult> {
  const telegramId = parseTelegramId(params.telegramId);
  const username = params.username ?? null;
  if (
    username !== null &&
    (typeof username !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(username))
  ) {
    throw badRequest('username must be 1-64 letters, digits or underscores', 'username');
  }
  return db.transaction().execute(async (trx) => {
    const row = await trx
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
    const user = { id: row.id };
    await options.within?.(trx, user);
    return user;
  });
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

/**
 * 409 `user_erased`: an erased user keeps its user row and its books, but nothing new is
 * done for it (no keys, no adjustments, no suspension). `consequence` says what is refused.
 */
export function userErased(consequence: string): AppError {
  return conflict(`this user was erased; ${consequence}`, 'user_erased');
}

/**
 * Why an erased user takes no adjustment: erasure moved its balance to
 * liabilities:unclaimed:{id} (docs/privacy.md), and a credit would land beside it in
 * liabilities:customers:{id}, owed to nobody who can spend it.
 */
export const ERASED_NO_ADJUSTMENTS =
  'its balance is kept as liabilities:unclaimed and takes no adjustments';

/** Throws 409 `user_erased` when the user was erased (see userErased). */
export function assertNotErased(user: { status: string }, consequence: string): void {
  if (user.status === 'erased') throw userErased(consequence);
}
