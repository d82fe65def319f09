import { describe, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { runLedgerIntegrity } from '../../src/integrity/runLedgerIntegrity.js';
import { runRetention } from '../../src/privacy/retention.js';
import { useBook, type Book } from '../support/book.js';
import type { TestDatabase } from '../support/db.js';

/** Law 7 across retention: rolling usage rows up into usage_daily changes no day's totals. */
let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;

useBook((ready) => ({ database, ledger, book } = ready));

describe('usage against revenue across retention', () => {
  test('a call that finished just before UTC midnight and settled after it still matches its revenue once retention rolls it up', async () => {
    const usageRevenue = () =>
      runLedgerIntegrity({ pool: database.pool, ledger }, { checks: ['usage-revenue'] });
    const { rows } = await database.pool.query<{ id: string; created: Date }>(
      `select u.id::text as id, e.created_at as created
         from usage_records u join ledger_entries e on e.id = u.entry_id
        where u.cost_usd > 0 order by u.id limit 1`,
    );
    const row = rows[0]!;
    const midnight = Date.UTC(
      row.created.getUTCFullYear(),
      row.created.getUTCMonth(),
      row.created.getUTCDate(),
    );
    // The gateway stamps finished_at before the settlement's entry is written.
    await database.pool.query(
      `update usage_records set started_at = $2, finished_at = $2 where id = $1`,
      [row.id, new Date(midnight - 20)],
    );
    expect((await usageRevenue()).findings).toEqual([]);

    // Retention (90 days) at a moment when only that row is past its cutoff: it changes no
    // money, so the books must still check out.
    const now = new Date(midnight + 90 * 86_400_000 + 1);
    const result = await runRetention(
      book.db,
      { retention: { usageLogDays: 90, requestMetaDays: 30 } },
      now,
    );
    expect(result.rolledUpRows).toBe(1);
    expect((await usageRevenue()).findings).toEqual([]);
  });
});
