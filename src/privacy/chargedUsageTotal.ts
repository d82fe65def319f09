import { sql, type Kysely } from 'kysely';
import { Decimal } from '../../ledger/index.js';
import type { Database } from '../db/schema.js';

/**
 * Every USD charged for API calls: the usage rows still kept plus the daily aggregates that
 * retention rolled older rows into. Law 7 compares this, not usage_records alone, with the
 * revenue postings.
 */
export async function chargedUsageTotal(db: Kysely<Database>): Promise<Decimal> {
  const { rows } = await sql<{ total: string }>`
    select (select coalesce(sum(cost_usd), 0) from usage_records)
         + (select coalesce(sum(cost_usd), 0) from usage_daily) as total`.execute(db);
  return new Decimal(rows[0]!.total);
}
