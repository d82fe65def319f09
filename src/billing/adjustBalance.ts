import type pg from 'pg';
import { LedgerError, parseAmount, type PostgresLedger } from '../../ledger/index.js';
import { badRequest, notFound } from '../errors.js';
import { assertNotErased, ERASED_NO_ADJUSTMENTS } from '../users/createUser.js';
import { accounts } from './accounts.js';

export interface AdjustBalanceParameters {
  userId: string;
  /** USD as a decimal string; negative debits the user (never below zero). */
  amount: unknown;
  reason: unknown;
  idempotencyKey?: string | undefined;
  /** Who asked for it (recorded on the entry). */
  actor?: string;
}

export interface AdjustBalanceResult {
  entryId: string;
  replayed: boolean;
}

/**
 * An admin adjustment: a credit is Dr expenses:promotions / Cr the customer, a debit the
 * reverse. A debit larger than the available balance is refused (insufficient funds).
 *
 * The entry is written in a transaction that holds the user's row (FOR SHARE), and an erased
 * user is refused (409 `user_erased`) under that lock: an erasure running at the same moment
 * (which takes the row FOR UPDATE) either waits and then moves this credit to unclaimed with
 * the rest of the balance, or has finished and this adjustment is refused. Without the lock a
 * credit could land in the customer account just after erasure emptied it.
 */
export async function adjustBalance(
  { ledger, database: { pool } }: { ledger: PostgresLedger; database: { pool: pg.Pool } },
  params: AdjustBalanceParameters,
): Promise<AdjustBalanceResult> {
  const amount = parseAmount(params.amount, {
    scale: ledger.scaleOf('USD'),
    currency: 'USD',
    allowNegative: true,
  });
  if (
    typeof params.reason !== 'string' ||
    params.reason.trim() === '' ||
    params.reason.length > 500
  ) {
    throw badRequest('reason must be a text of 1-500 characters', 'reason');
  }
  const key = params.idempotencyKey;
  if (key !== undefined && (key.length === 0 || key.length > 200)) {
    throw badRequest('the idempotency key must be 1-200 characters', 'idempotencyKey');
  }
  const entry = {
    kind: 'adjustment',
    description: params.reason.trim(),
    metadata: {
      reason: params.reason.trim(),
      userId: params.userId,
      ...(params.actor ? { actor: params.actor } : {}),
    },
    postings: [
      { account: accounts.promotions, amount },
      { account: accounts.customer(params.userId), amount: amount.neg() },
    ],
    ...(key ? { idempotencyKey: `adjustment:${key}` } : {}),
  };
  for (let attempt = 1; ; attempt += 1) {
    const client = await pool.connect();
    try {
      await client.query('begin');
      const { rows } = await client.query<{ status: string }>(
        'select status from users where id = $1 for share',
        [params.userId],
      );
      if (!rows[0])
        throw notFound(`user ${params.userId} does not exist`, 'user_not_found', 'user');
      assertNotErased(rows[0], ERASED_NO_ADJUSTMENTS);
      const [result] = await ledger.within(client).postEntries([entry]);
      if (result instanceof LedgerError) throw result;
      await client.query('commit');
      return result!;
    } catch (error) {
      await client.query('rollback').catch(() => {});
      // The same idempotency key written by a concurrent adjustment that committed first:
      // the next attempt finds it and replays its result (or reports the conflict).
      if ((error as { code?: unknown }).code !== '23505' || attempt === 3) throw error;
    } finally {
      client.release();
    }
  }
}
