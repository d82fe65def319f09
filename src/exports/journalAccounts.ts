import { journalWhere, timeColumn, type JournalFilter } from './journalFilter.js';
import type { SnapshotReader } from './snapshot.js';

export interface UsedAccount {
  code: string;
  currency: string;
  /** UTC day (YYYY-MM-DD) of the account's first entry in the export. */
  firstDay: string;
}

export interface UsedCurrency {
  currency: string;
  /**
   * Fractional digits to declare: the currency's scale, or more when an amount in the export
   * has more (a scale narrowed after those amounts were booked).
   */
  scale: number;
  /**
   * The most significant digits of any one amount in the export (`0.000001` has 1,
   * `12345.5` has 6): beancount reads a number with more than 28 of them rounded.
   */
  digits: number;
  firstDay: string;
}

function usedFrom(
  filter: JournalFilter,
  join = 'join ledger_accounts a on a.id = p.account_id',
): { from: string; values: unknown[]; day: string } {
  const where = journalWhere(filter);
  return {
    from: `ledger_entries e join ledger_postings p on p.entry_id = e.id ${join} where ${where.sql}`,
    values: where.values,
    day: `to_char(min(e.${timeColumn(filter.basis)}) at time zone 'UTC', 'YYYY-MM-DD')`,
  };
}

/** The accounts the export's entries touch, by code, with the day each is first used. */
export async function* usedAccounts(
  reader: SnapshotReader,
  filter: JournalFilter,
): AsyncGenerator<UsedAccount[]> {
  const used = usedFrom(filter);
  yield* reader.pages<UsedAccount>(
    `select a.code, a.currency, ${used.day} as "firstDay" from ${used.from}
      group by a.code, a.currency order by a.code`,
    used.values,
  );
}

/** The currencies the export's entries use, with their scale, widest amount and first day. */
export async function usedCurrencies(
  reader: SnapshotReader,
  filter: JournalFilter,
): Promise<UsedCurrency[]> {
  const used = usedFrom(filter, 'join ledger_currencies c on c.code = p.currency');
  // The configured scale can be narrowed after amounts with more digits were booked; a
  // declaration below an amount's digits would make hledger round that amount in reports.
  return reader.query<UsedCurrency>(
    `select p.currency, greatest(c.scale, max(min_scale(p.amount))) as scale,
            max(length(trim(both '0' from replace(trim_scale(abs(p.amount))::text, '.', '')))) as digits,
            ${used.day} as "firstDay" from ${used.from}
      group by p.currency, c.scale order by p.currency`,
    used.values,
  );
}

/** Groups of used account codes that differ only in letter case (rare; beancount names fold case). */
export async function caseFoldedGroups(
  reader: SnapshotReader,
  filter: JournalFilter,
): Promise<string[][]> {
  const used = usedFrom(filter);
  const rows = await reader.query<{ codes: string[] }>(
    `select array_agg(distinct a.code order by a.code) as codes from ${used.from}
      group by lower(a.code) having count(distinct a.code) > 1 order by lower(a.code) limit 1000`,
    used.values,
  );
  return rows.map((row) => row.codes);
}
