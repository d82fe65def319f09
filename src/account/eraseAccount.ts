import { sql, type Kysely } from 'kysely';
import { Decimal, InsufficientFundsError, type PostgresLedger } from '../../ledger/index.js';
import { audit } from '../audit.js';
import { assertAccountUsable } from '../auth/sessions.js';
import { accounts } from '../billing/accounts.js';
import { getUserBalance } from '../billing/getUserBalance.js';
import type { Database } from '../db/schema.js';
import { AppError, badRequest, conflict } from '../errors.js';
import { forgetKeysLocally, notifyKeyChangeOnCommit } from '../keys/apiKeys.js';
import type { Logger } from '../log.js';

/** The exact words the body's `confirm` must hold, so a stray DELETE erases nothing. */
export const ERASURE_CONFIRMATION = 'erase my account';

/**
 * Fields of the admin's answers about a user (the profile a suspension answers with) that name
 * the person: null in the answers kept for replays once the user is erased.
 */
const PERSONAL_ANSWER_FIELDS = [
  'telegramId',
  'username',
  'firstName',
  'lastName',
  'photoUrl',
  'suspensionReason',
];

/** Where an erased user's remaining balance goes (ledger/chart.ts, docs/privacy.md). */
export const unclaimedAccount = accounts.unclaimed;

export interface EraseAccountParameters {
  userId: string;
  /** Must equal ERASURE_CONFIRMATION. */
  confirm: unknown;
  now: Date;
}

export interface EraseAccountResult {
  id: string;
  status: 'erased';
  erasedAt: string;
  keysRevoked: number;
  sessionsEnded: number;
  usageRowsScrubbed: number;
  /** The remaining balance, moved to liabilities:unclaimed:{id}; null entry when it was zero. */
  unclaimedBalance: { amount: string; currency: 'USD'; account: string; entryId: string | null };
}

/**
 * Erases a user (DELETE /api/me). In one transaction: Telegram id, username, names and photo
 * URL are removed, the user row stays with status 'erased' (so ledger account codes still
 * resolve), every API key and every session is revoked (the key's name cleared), and the
 * user's usage rows lose client_ip and user_agent; its NOTIFY lingxi_keys reaches every
 * process's key cache exactly when it commits, and the audit log records `account.erase`. Then
 * the remaining available balance is moved by a ledger entry from liabilities:customers:{id}
 * to liabilities:unclaimed:{id}: still owed, no longer tied to a person. Ledger tables are
 * only appended to, never changed.
 *
 * Refused (409 `calls_in_flight`, nothing changed) while API calls hold part of the balance;
 * an account another erasure erased first: 403 `account_erased`.
 */
export async function eraseAccount(
  db: Kysely<Database>,
  ledger: PostgresLedger,
  params: EraseAccountParameters,
): Promise<EraseAccountResult> {
  if (params.confirm !== ERASURE_CONFIRMATION)
    throw badRequest(
      `erasure is permanent: send {"confirm": "${ERASURE_CONFIRMATION}"} to confirm it`,
      'confirm',
      'confirmation_required',
    );
  const { userId, now } = params;
  const before = await getUserBalance(ledger, userId);
  if (!new Decimal(before.held).isZero())
    throw conflict(
      'API calls are still in flight on this account; erase it once they have finished',
      'calls_in_flight',
    );

  const changed = await db.transaction().execute(async (trx) => {
    const user = await trx
      .selectFrom('users')
      .select('status')
      .where('id', '=', userId)
      .forUpdate()
      .executeTakeFirstOrThrow();
    // Another erasure of the account committed while this one waited for the row (a client
    // that gave up on its DELETE and retried): 403 `account_erased`, as a retry that comes
    // after it is told when it authenticates, never a different answer for the same retry.
    if (user.status === 'erased') assertAccountUsable(user.status);
    await trx
      .updateTable('users')
      .set({
        status: 'erased',
        telegram_id: null,
        username: null,
        first_name: null,
        last_name: null,
        photo_url: null,
        suspension_reason: null,
        erased_at: now,
        updated_at: now,
      })
      .where('id', '=', userId)
      .execute();
    const keys = await trx
      .updateTable('api_keys')
      .set({ revoked_at: sql`coalesce(revoked_at, ${now}::timestamptz)`, name: '' })
      .where('user_id', '=', userId)
      .returning(sql<boolean>`revoked_at = ${now}::timestamptz`.as('now_revoked'))
      .execute();
    // Revoked, not deleted: a client whose DELETE /api/me answer was lost retries with the same
    // token and is told 403 `account_erased` (authenticateSession), not 401 `invalid_session`.
    // A session row holds a token hash, a method and times, no personal data; retention deletes
    // it `requestMetaDays` after this revocation, as any signed-out session.
    const sessions = await trx
      .updateTable('sessions')
      .set({ revoked_at: sql`coalesce(revoked_at, ${now}::timestamptz)` })
      .where('user_id', '=', userId)
      .returning(
        sql<boolean>`revoked_at = ${now}::timestamptz and expires_at > ${now}::timestamptz`.as(
          'now_ended',
        ),
      )
      .execute();
    // Answers kept for Idempotency-Key replays can name the person (a key's name, the profile
    // a suspension answers with): the user's own are dropped (an erased user replays nothing),
    // the admin's about them lose the key name and keep the profile's fields as null, as the
    // erased account now reads.
    await trx.deleteFrom('http_idempotency').where('key', 'like', `user:${userId}:%`).execute();
    await sql`update http_idempotency
         set response = (response - 'name') || coalesce(
           (select jsonb_object_agg(field, 'null'::jsonb) from jsonb_object_keys(response) field
             where field = any(${PERSONAL_ANSWER_FIELDS}::text[])), '{}'::jsonb)
       where key like 'admin:%' and path like ${`/admin/users/${userId}/%`}
         and jsonb_typeof(response) = 'object'`.execute(trx);
    const usage = await trx
      .updateTable('usage_records')
      .set({ client_ip: null, user_agent: null })
      .where('user_id', '=', userId)
      .where((eb) => eb.or([eb('client_ip', 'is not', null), eb('user_agent', 'is not', null)]))
      .executeTakeFirst();
    const counts = {
      keysRevoked: keys.filter((k) => k.now_revoked).length,
      sessionsEnded: sessions.filter((row) => row.now_ended).length,
      usageRowsScrubbed: Number(usage.numUpdatedRows),
    };
    // Audited with the erasure, in its transaction: recorded if and only if it happened, even
    // when the balance's move below fails (it is its own ledger entry, kind `erasure`).
    await audit(trx, {
      actor: `user:${userId}`,
      action: 'account.erase',
      target: `user:${userId}`,
      details: counts,
    });
    // Delivered to every process's key cache exactly when this transaction commits.
    await notifyKeyChangeOnCommit(trx);
    return counts;
  });
  forgetKeysLocally();

  const unclaimed = await moveToUnclaimed(ledger, userId);
  return {
    id: userId,
    status: 'erased',
    erasedAt: now.toISOString(),
    ...changed,
    unclaimedBalance: { ...unclaimed, currency: 'USD', account: unclaimedAccount(userId) },
  };
}

export interface MoveErasedBalancesResult {
  /** Users whose remaining balance was moved to their unclaimed account. */
  moved: number;
  /** Users whose move threw; each is logged with its cause and tried again next run. */
  failed: number;
}

/**
 * Moves what is left in erased users' customer accounts to their unclaimed accounts: a move
 * that failed at the erasure (`erasure_incomplete`), or a call authorised just before it whose
 * hold was released after. Run by the cron role's retention job, which fails when `failed` is
 * not zero. A user whose move throws is logged and counted, and the others are still moved:
 * one stuck user does not hold up every user after them.
 * Safe beside an erasure moving the same balance: the second move finds nothing available.
 */
export async function moveErasedBalances(
  db: Kysely<Database>,
  ledger: PostgresLedger,
  options: { limit?: number; logger?: Pick<Logger, 'error'> } = {},
): Promise<MoveErasedBalancesResult> {
  const { rows } = await sql<{ id: string }>`
    select u.id::text as id from users u
      join ledger_accounts a on a.code = ${accounts.customer('')} || u.id::text
     where u.status = 'erased' and a.credits_posted - a.debits_posted - a.debits_pending > 0
     order by u.id limit ${options.limit ?? 1000}`.execute(db);
  let moved = 0;
  let failed = 0;
  for (const { id } of rows) {
    try {
      if ((await moveToUnclaimed(ledger, id)).entryId !== null) moved += 1;
    } catch (error) {
      failed += 1;
      // The whole error: pino's serializer keeps its cause (the ledger's or database's own).
      options.logger?.error({ userId: id, err: error }, 'erased balance not moved');
    }
  }
  return { moved, failed };
}

async function moveToUnclaimed(
  ledger: PostgresLedger,
  userId: string,
): Promise<{ amount: string; entryId: string | null }> {
  // A call authorised just before the keys were revoked may take a hold between our read and
  // our entry; read again and retry a few times. What such a call releases later is moved by
  // the retention job (moveErasedBalances).
  for (let attempt = 1; ; attempt += 1) {
    const amount = new Decimal((await getUserBalance(ledger, userId)).available);
    if (amount.lte(0)) return { amount: '0', entryId: null };
    try {
      const { entryId } = await ledger.postEntry({
        kind: 'erasure',
        description: 'account erased: remaining balance kept as unclaimed',
        metadata: { userId, rule: 'unclaimed-liability' },
        postings: [
          { account: accounts.customer(userId), amount },
          { account: unclaimedAccount(userId), amount: amount.neg() },
        ],
      });
      return { amount: amount.toString(), entryId };
    } catch (error) {
      if (!(error instanceof InsufficientFundsError) || attempt === 3) {
        throw new AppError(
          'erasure_incomplete',
          'the account was erased but its balance could not be moved yet; it stays owed to the account',
          { status: 500, cause: error },
        );
      }
    }
  }
}
