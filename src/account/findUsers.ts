import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { badRequest } from '../errors.js';
import { toAdminView, type AdminUserView } from './profile.js';

export interface FindUsersParameters {
  telegramId?: string | undefined;
  username?: string | undefined;
}

/** Users by Telegram id (exact) or username (case-insensitive); exactly one of the two. */
export async function findUsers(
  db: Kysely<Database>,
  params: FindUsersParameters,
): Promise<AdminUserView[]> {
  const { telegramId, username } = params;
  if ((telegramId === undefined) === (username === undefined))
    throw badRequest('give exactly one of telegramId or username', 'telegramId');
  let query = db.selectFrom('users').selectAll().orderBy('id').limit(100);
  if (telegramId !== undefined) {
    if (!/^[1-9]\d{0,17}$/.test(telegramId))
      throw badRequest('telegramId must be a positive whole number', 'telegramId');
    query = query.where('telegram_id', '=', telegramId);
  } else {
    const name = username!.replace(/^@/, '');
    if (!/^[A-Za-z0-9_]{1,64}$/.test(name))
      throw badRequest('username must be 1-64 letters, digits or underscores', 'username');
    query = query.where((eb) => eb(eb.fn('lower', ['username']), '=', name.toLowerCase()));
  }
  return (await query.execute()).map(toAdminView);
}
