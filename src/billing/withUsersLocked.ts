import type pg from 'pg';
import type { PostgresLedger } from '../../ledger/index.js';
import { notFound } from '../errors.js';
import { assertNotErased } from '../users/createUser.js';
import { isUserId } from '../users/userId.js';

/** What a ledger write on users' accounts needs: the ledger, and the pool to open its transaction on. */
export interface LedgerDeps {
  ledger: PostgresLedger;
  database: { pool: pg.Pool };
}

/**
 * Runs `body` (ledger writes through `ledger.within`) in a transaction holding the named users'
 * rows FOR SHARE, in id order, each one checked to exist and not be erased under that lock. An
 * erasure running at the same moment takes the row FOR UPDATE: it either waits and then moves
 * what this write credited to unclaimed, or has finished and this write is refused (409
 * `user_erased`, saying `erasedConsequence`). A unique violation (the same idempotency key
 * written by a concurrent request that committed first) is tried again: the next attempt
 * replays that result, or reports the conflict. `body` also gets the transaction's client, for
 * writes that must commit with the entry (its audit record).
 */
export async function withUsersLocked<T>(
  { ledger, database: { pool } }: LedgerDeps,
  userIds: string[],
  options: { erasedConsequence: string; param: string },
  body: (ledger: ReturnType<PostgresLedger['within']>, client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const missing = (userId: string) =>
    notFound(`user ${userId.slice(0, 40)} does not exist`, 'user_not_found', options.param);
  for (const userId of userIds) if (!isUserId(userId)) throw missing(userId);
  const sorted = [...new Set(userIds)].sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  for (let attempt = 1; ; attempt += 1) {
    const client = await pool.connect();
    try {
      await client.query('begin');
      for (const userId of sorted) {
        const { rows } = await client.query<{ status: string }>(
          'select status from users where id = $1 for share',
          [userId],
        );
        if (!rows[0]) throw missing(userId);
        assertNotErased(rows[0], options.erasedConsequence);
      }
      const result = await body(ledger.within(client), client);
      await client.query('commit');
      return result;
    } catch (error) {
      await client.query('rollback').catch(() => {});
      if ((error as { code?: unknown }).code !== '23505' || attempt === 3) throw error;
    } finally {
      client.release();
    }
  }
}
