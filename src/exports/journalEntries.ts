import { journalWhere, timeColumn, type JournalFilter } from './journalFilter.js';
import type { SnapshotReader } from './snapshot.js';

/** One posting as exported: amounts are exact decimal strings without trailing zeros. */
export interface JournalPosting {
  /** 1, 2, 3... within the entry. */
  line: number;
  account: string;
  currency: string;
  /** Positive is a debit, negative a credit. */
  amount: string;
  /** Position of the posting in its account's history (1, 2, 3...). */
  accountVersion: string;
  /** Debits minus credits of the account after this posting. */
  balanceAfter: string;
}

/** One journal entry with its postings, timestamps as ISO 8601 UTC with microseconds. */
export interface JournalEntry {
  id: string;
  /** The writing transaction (xid8) as decimal text: the commit order sealing uses. */
  txId: string;
  kind: string;
  description: string;
  metadata: Record<string, unknown>;
  reversesEntryId: string | null;
  holdId: string | null;
  createdAt: string;
  effectiveAt: string;
  /** The seal that covers the entry; null until the sealing job reaches it. */
  seal: number | null;
  postings: JournalPosting[];
}

export type JournalOrder = 'created' | 'effective' | 'commit';

export interface ReadJournalParameters {
  filter?: JournalFilter;
  /** `commit`: (tx_id, id), the order seals hash in. Default: the filter's time basis. */
  order?: JournalOrder;
  /** Only entries with tx_id in [fromTxId, toTxId) (sealing). */
  txRange?: { fromTxId: string; toTxId: string };
  /** Look up the seal of each entry (default true). */
  withSeal?: boolean;
  pageRows?: number;
}

interface EntryRow {
  id: string;
  tx_id: string;
  kind: string;
  description: string;
  metadata: string;
  reverses_entry_id: string | null;
  hold_id: string | null;
  created_at: string;
  effective_at: string;
  seal: string | null;
}

interface PostingRow {
  entry_id: string;
  line: number;
  account: string;
  currency: string;
  amount: string;
  account_version: string;
  balance_after: string;
}

/** ISO 8601 in UTC with all six fractional digits PostgreSQL keeps. */
export const ISO_UTC = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/**
 * The entries a filter selects, whole (every posting, in line order), in a stable order:
 * time, then entry id, then line. Yields pages of complete entries; memory stays within a
 * page of each cursor, whatever the size of the journal.
 *
 * Two cursors over one snapshot, merged here: the entries in order, and their postings in
 * the same order. Each sort then carries narrow rows (an entry's metadata is not repeated
 * on every posting), which is most of what a whole-journal read costs the server.
 */
export async function* readJournalEntries(
  reader: SnapshotReader,
  params: ReadJournalParameters = {},
): AsyncGenerator<JournalEntry[]> {
  const filter = params.filter ?? {};
  const order = params.order ?? (filter.basis === 'effective' ? 'effective' : 'created');
  const where = journalWhere(filter);
  const values = [...where.values];
  const clauses = [where.sql];
  if (params.txRange) {
    values.push(params.txRange.fromTxId, params.txRange.toTxId);
    clauses.push(`e.tx_id >= $${values.length - 1}::xid8 and e.tx_id < $${values.length}::xid8`);
  }
  // xid8 sorts without a fast comparator; its value as bigint sorts the same, faster.
  const key =
    order === 'commit'
      ? { entries: 'e.tx_id', postings: 'e.tx_id::text::bigint' }
      : { entries: `e.${timeColumn(order)}`, postings: `e.${timeColumn(order)}` };
  const seal =
    params.withSeal === false
      ? 'null'
      : '(select s.seal::text from ledger_seals s where s.to_tx_id > e.tx_id order by s.to_tx_id limit 1)';
  const entriesQuery = `
    select e.id::text as id, e.tx_id::text as tx_id, e.kind, e.description, e.metadata::text as metadata,
           e.reverses_entry_id::text as reverses_entry_id, e.hold_id::text as hold_id,
           to_char(e.created_at at time zone 'UTC', ${ISO_UTC}) as created_at,
           to_char(e.effective_at at time zone 'UTC', ${ISO_UTC}) as effective_at, ${seal} as seal
      from ledger_entries e where ${clauses.join(' and ')}
     order by ${key.entries}, e.id`;
  const postingsQuery = `
    select p.entry_id::text as entry_id, p.line, a.code as account, p.currency,
           trim_scale(p.amount)::text as amount, p.account_version::text as account_version,
           trim_scale(p.balance_after)::text as balance_after
      from ledger_entries e
      join ledger_postings p on p.entry_id = e.id
      join ledger_accounts a on a.id = p.account_id
     where ${clauses.join(' and ')}
     order by ${key.postings}, e.id, p.line`;
  const pages = reader.pages<PostingRow>(postingsQuery, values, params.pageRows);
  // The current page of postings and the position in it: an await only per page.
  let page: PostingRow[] = [];
  let at = 0;
  let exhausted = false;
  const current = async (): Promise<PostingRow | undefined> => {
    while (at >= page.length && !exhausted) {
      const next = await pages.next();
      if (next.done) exhausted = true;
      else [page, at] = [next.value, 0];
    }
    return page[at];
  };
  try {
    for await (const rows of reader.pages<EntryRow>(entriesQuery, values, params.pageRows)) {
      const entries: JournalEntry[] = [];
      for (const row of rows) {
        const entry = entryFromRow(row);
        for (
          let p = page[at] ?? (await current());
          p?.entry_id === entry.id;
          p = page[at] ?? (await current())
        ) {
          entry.postings.push({
            line: p.line,
            account: p.account,
            currency: p.currency,
            amount: p.amount,
            accountVersion: p.account_version,
            balanceAfter: p.balance_after,
          });
          at += 1;
        }
        entries.push(entry);
      }
      yield entries;
    }
    const left = await current();
    if (left !== undefined) {
      // Both cursors select the same entries in the same order on one snapshot.
      throw new Error(`posting ${left.entry_id}:${left.line} matched no entry in order`);
    }
  } finally {
    await pages.return(undefined);
  }
}

function entryFromRow(row: EntryRow): JournalEntry {
  return {
    id: row.id,
    txId: row.tx_id,
    kind: row.kind,
    description: row.description,
    metadata: JSON.parse(row.metadata) as Record<string, unknown>,
    reversesEntryId: row.reverses_entry_id,
    holdId: row.hold_id,
    createdAt: row.created_at,
    effectiveAt: row.effective_at,
    seal: row.seal === null ? null : Number(row.seal),
    postings: [],
  };
}

/** The rate conventions other parts write on entries: `metadata.rate`, `metadata.rateSource`. */
export function entryRate(entry: JournalEntry): { rate: string; rateSource: string } {
  const { rate, rateSource } = entry.metadata;
  return {
    rate: typeof rate === 'string' ? rate : '',
    rateSource: typeof rateSource === 'string' ? rateSource : '',
  };
}

/** `network:txHash:logIndex` from `metadata.chain` (chain events), else ''. */
export function entryChainReference(entry: JournalEntry): string {
  const chain = entry.metadata['chain'];
  if (typeof chain !== 'object' || chain === null || Array.isArray(chain)) return '';
  const { network, txHash, logIndex } = chain as Record<string, unknown>;
  if (typeof network !== 'string' || typeof txHash !== 'string') return '';
  const index =
    typeof logIndex === 'number' || typeof logIndex === 'string' ? `:${String(logIndex)}` : '';
  return `${network}:${txHash}${index}`;
}
