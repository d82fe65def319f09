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
  firstDay: string;
}

/** The entry of an export whose amounts in one currency need the most digits to add up. */
export interface WidestEntry {
  entryId: string;
  currency: string;
  /**
   * Integer digits of the sum of the debits plus the most decimals of any posting: enough for
   * every amount, and every partial sum of the entry in that currency (none is larger than
   * the debits, which the credits equal), to be exact.
   */
  digits: number;
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

/** The currencies the export's entries use, with their scale and first day. */
export async function usedCurrencies(
  reader: SnapshotReader,
  filter: JournalFilter,
): Promise<UsedCurrency[]> {
  const used = usedFrom(filter, 'join ledger_currencies c on c.code = p.currency');
  // The configured scale can be narrowed after amounts with more digits were booked; a
  // declaration below an amount's digits would make hledger round that amount in reports.
  return reader.query<UsedCurrency>(
    `select p.currency, greatest(c.scale, max(min_scale(p.amount))) as scale,
            ${used.day} as "firstDay" from ${used.from}
      group by p.currency, c.scale order by p.currency`,
    used.values,
  );
}

/** The export's entry that needs the most digits to add up its amounts in one currency. */
export async function widestEntry(
  reader: SnapshotReader,
  filter: JournalFilter,
): Promise<WidestEntry | undefined> {
  const where = journalWhere(filter);
  const [widest] = await reader.query<WidestEntry>(
    `select "entryId", currency,
            (case when debits >= 1 then length(trunc(debits)::text) else 0 end) + decimals as digits
       from (select e.id::text as "entryId", p.currency, sum(p.amount) filter (where p.amount > 0) as debits,
                    max(min_scale(p.amount)) as decimals
               from ledger_entries e join ledger_postings p on p.entry_id = e.id
              where ${where.sql}
              group by e.id, p.currency) entries
      order by digits desc, "entryId" limit 1`,
    where.values,
  );
  return widest;
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
