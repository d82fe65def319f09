import { csvTable } from './csv.js';
import { entryChainReference, entryRate } from './journalEntries.js';
import type { JournalWriterContext } from './streamJournal.js';

/** The columns of the CSV journal, in order. */
export const JOURNAL_CSV_COLUMNS = [
  'entry_id',
  'timestamp',
  'account',
  'debit',
  'credit',
  'currency',
  'rate',
  'rate_source',
  'description',
  'chain_ref',
  'line',
  'kind',
  'reverses_entry_id',
  'seal',
] as const;

const table = csvTable(JOURNAL_CSV_COLUMNS, ['debit', 'credit', 'rate', 'line', 'seal']);

/**
 * One line per posting. `timestamp` is the entry's time on the export's basis (ISO 8601,
 * UTC, microseconds); a positive amount is a debit, a negative one a credit (written
 * without its sign); the other column is empty. `rate`/`rate_source` come from the entry's
 * metadata (USD per unit of the asset), `chain_ref` is `network:txHash:logIndex` for chain
 * events, and `seal` is the number of the seal that covers the entry (empty until sealed).
 * Text cells that a spreadsheet would run as a formula start with `'` (see {@link csvTable}).
 */
export async function* journalCsv(context: JournalWriterContext): AsyncGenerator<string> {
  // The header goes out with the first page, not before the first query: an HTTP export
  // commits its 200 on the first chunk, and a query that fails must still answer an error.
  let header = table.header;
  const effective = context.filter.basis === 'effective';
  for await (const entries of context.entries()) {
    let chunk = header;
    header = '';
    for (const entry of entries) {
      const { rate, rateSource } = entryRate(entry);
      const chain = entryChainReference(entry);
      const timestamp = effective ? entry.effectiveAt : entry.createdAt;
      const seal = entry.seal === null ? '' : String(entry.seal);
      for (const posting of entry.postings) {
        const credit = posting.amount.startsWith('-');
        chunk += table.line([
          entry.id,
          timestamp,
          posting.account,
          credit ? '' : posting.amount,
          credit ? posting.amount.slice(1) : '',
          posting.currency,
          rate,
          rateSource,
          entry.description,
          chain,
          String(posting.line),
          entry.kind,
          entry.reversesEntryId ?? '',
          seal,
        ]);
      }
    }
    yield chunk;
  }
  if (header !== '') yield header;
}
