import type { Kysely, Selectable } from 'kysely';
import type { PostgresLedger } from '../../ledger/index.js';
import { getUserBalance, type UserBalance } from '../billing/getUserBalance.js';
import type { Database } from '../db/schema.js';
import { notFound } from '../errors.js';
import { isUserId } from '../users/userId.js';
import { iso } from './params.js';

/** What we hold about a user, as the user sees it. */
export interface AccountProfile {
  id: string;
  telegramId: string | null;
  username: string | null;
  firstName: string | null;
  lastName: string | null;
  photoUrl: string | null;
  status: string;
  createdAt: string;
  lastLoginAt: string | null;
}

/** An operator's view: the profile plus suspension and erasure marks. */
export interface AdminUserView extends AccountProfile {
  updatedAt: string;
  suspendedAt: string | null;
  suspensionReason: string | null;
  erasedAt: string | null;
}

type UserRow = Selectable<Database['users']>;

export async function getProfile(db: Kysely<Database>, userId: string): Promise<AccountProfile> {
  const row = await readUser(db, userId);
  return toProfile(row);
}

/** The profile with the balance: `GET /api/me`. */
export async function getProfileWithBalance(
  db: Kysely<Database>,
  ledger: PostgresLedger,
  userId: string,
): Promise<AccountProfile & { balance: UserBalance }> {
  const [profile, balance] = await Promise.all([
    getProfile(db, userId),
    getUserBalance(ledger, userId),
  ]);
  return { ...profile, balance };
}

export async function getAdminUserView(
  db: Kysely<Database>,
  userId: string,
): Promise<AdminUserView> {
  return toAdminView(await readUser(db, userId));
}

export function toAdminView(row: UserRow): AdminUserView {
  return {
    ...toProfile(row),
    updatedAt: iso(row.updated_at)!,
    suspendedAt: iso(row.suspended_at),
    suspensionReason: row.suspension_reason,
    erasedAt: iso(row.erased_at),
  };
}

function toProfile(row: UserRow): AccountProfile {
  return {
    id: row.id,
    telegramId: row.telegram_id,
    username: row.username,
    firstName: row.first_name,
    lastName: row.last_name,
    photoUrl: row.photo_url,
    status: row.status,
    createdAt: iso(row.created_at)!,
    lastLoginAt: iso(row.last_login_at),
  };
}

export async function readUser(db: Kysely<Database>, userId: string): Promise<UserRow> {
  const row = isUserId(userId)
    ? await db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst()
    : undefined;
  if (!row) throw notFound(`user ${userId.slice(0, 40)} does not exist`, 'user_not_found', 'id');
  return row;
}
