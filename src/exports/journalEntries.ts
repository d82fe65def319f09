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

interface Row {
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
 * time, then entry id, then line. Yields pages of complete entries; memory stays within one
 * page of rows plus one entry, whatever the size of the journal.
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
  const orderBy =
    order === 'commit'
      ? 'e.tx_id, e.id'
      : `e.${timeColumn(order === 'effective' ? 'effective' : 'created')}, e.id`;
  const seal =
    params.withSeal === false
      ? 'null::bigint'
      : '(select s.seal from ledger_seals s where s.to_tx_id > e.tx_id order by s.to_tx_id limit 1)';
  const text = `
    select e.id::text as id, e.tx_id::text as tx_id, e.kind, e.description, e.metadata::text as metadata,
           e.reverses_entry_id::text as reverses_entry_id, e.hold_id::text as hold_id,
           to_char(e.created_at at time zone 'UTC', ${ISO_UTC}) as created_at,
           to_char(e.effective_at at time zone 'UTC', ${ISO_UTC}) as effective_at,
           e.seal::text as seal, p.line, a.code as account, p.currency,
           trim_scale(p.amount)::text as amount, p.account_version::text as account_version,
           trim_scale(p.balance_after)::text as balance_after
      from (select e.*, ${seal} as seal from ledger_entries e where ${clauses.join(' and ')}) e
      join ledger_postings p on p.entry_id = e.id
      join ledger_accounts a on a.id = p.account_id
     order by ${orderBy}, p.line`;
  let current: JournalEntry | null = null;
  for await (const rows of reader.pages<Row>(text, values, params.pageRows)) {
    const done: JournalEntry[] = [];
    for (const row of rows) {
      if (current === null || current.id !== row.id) {
        if (current !== null) done.push(current);
        current = entryFromRow(row);
      }
      current.postings.push({
        line: row.line,
        account: row.account,
        currency: row.currency,
        amount: row.amount,
        accountVersion: row.account_version,
        balanceAfter: row.balance_after,
      });
    }
    if (done.length > 0) yield done;
  }
  if (current !== null) yield [current];
}

function entryFromRow(row: Row): JournalEntry {
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
