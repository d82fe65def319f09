import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { Decimal } from '../ledger/index.js';

/**
 * The naive way, as a baseline for bench:ledger: one transaction per operation, rows locked
 * with SELECT ... FOR UPDATE, one statement per row. Same schema, same rules (available
 * balance checked under the lock), no batching.
 */
export class NaiveLedger {
  constructor(private readonly pool: pg.Pool) {}

  async createHold(
    debitAccountId: string,
    creditAccountId: string,
    amount: string,
  ): Promise<string> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<{ id: string; available: string }>(
        `select id, credits_posted - debits_posted - debits_pending as available
           from ledger_accounts where id in ($1, $2) order by id for update`,
        [debitAccountId, creditAccountId],
      );
      const debit = rows.find((r) => r.id === debitAccountId)!;
      if (new Decimal(debit.available).lt(amount)) throw new Error('insufficient funds');
      const id = randomUUID();
      await client.query(
        `insert into ledger_holds (id, debit_account_id, credit_account_id, currency, amount) values ($1, $2, $3, 'USD', $4)`,
        [id, debitAccountId, creditAccountId, amount],
      );
      await client.query(
        `update ledger_accounts set debits_pending = debits_pending + $2 where id = $1`,
        [debitAccountId, amount],
      );
      await client.query(
        `update ledger_accounts set credits_pending = credits_pending + $2 where id = $1`,
        [creditAccountId, amount],
      );
      return id;
    });
  }

  async postHold(holdId: string, amount: string): Promise<void> {
    await this.transaction(async (client) => {
      const { rows } = await client.query<{
        debit_account_id: string;
        credit_account_id: string;
        amount: string;
        status: string;
      }>(
        `select debit_account_id, credit_account_id, amount, status from ledger_holds where id = $1 for update`,
        [holdId],
      );
      const hold = rows[0]!;
      if (hold.status !== 'pending') throw new Error('hold not pending');
      const accounts = await client.query<{
        id: string;
        version: string;
        debits_posted: string;
        credits_posted: string;
      }>(
        `select id, version, debits_posted, credits_posted from ledger_accounts where id in ($1, $2) order by id for update`,
        [hold.debit_account_id, hold.credit_account_id],
      );
      const byId = new Map(accounts.rows.map((a) => [a.id, a]));
      const entryId = randomUUID();
      const line = (accountId: string, signed: Decimal) => {
        const account = byId.get(accountId)!;
        return {
          accountId,
          amount: signed.toString(),
          version: (BigInt(account.version) + 1n).toString(),
          balanceAfter: new Decimal(account.debits_posted)
            .sub(account.credits_posted)
            .add(signed)
            .toString(),
        };
      };
      const debit = line(hold.debit_account_id, new Decimal(amount));
      const credit = line(hold.credit_account_id, new Decimal(amount).neg());
      // The schema wants an entry and its postings in one statement.
      await client.query(
        `with e as (insert into ledger_entries (id, kind, hold_id) values ($1, 'usage', $2))
         insert into ledger_postings (entry_id, line, account_id, currency, amount, account_version, balance_after)
         values ($1, 1, $3, 'USD', $4, $5, $6), ($1, 2, $7, 'USD', $8, $9, $10)`,
        [
          entryId,
          holdId,
          debit.accountId,
          debit.amount,
          debit.version,
          debit.balanceAfter,
          credit.accountId,
          credit.amount,
          credit.version,
          credit.balanceAfter,
        ],
      );
      await client.query(
        `update ledger_accounts set debits_pending = debits_pending - $2, debits_posted = debits_posted + $3, version = version + 1 where id = $1`,
        [hold.debit_account_id, hold.amount, amount],
      );
      await client.query(
        `update ledger_accounts set credits_pending = credits_pending - $2, credits_posted = credits_posted + $3, version = version + 1 where id = $1`,
        [hold.credit_account_id, hold.amount, amount],
      );
      await client.query(
        `update ledger_holds set status = 'posted', posted_amount = $2, entry_id = $3, resolved_at = now() where id = $1`,
        [holdId, amount, entryId],
      );
    });
  }

  private async transaction<T>(body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      const client = await this.pool.connect();
      try {
        await client.query('begin');
        const result = await body(client);
        await client.query('commit');
        return result;
      } catch (error) {
        await client.query('rollback').catch(() => {});
        if ((error as { code?: string }).code === '40P01' && attempt < 5) continue;
        throw error;
      } finally {
        client.release();
      }
    }
  }
}
