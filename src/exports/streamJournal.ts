import type pg from 'pg';
import { journalBeancount } from './journalBeancount.js';
import { journalCsv } from './journalCsv.js';
import { readJournalEntries, type JournalEntry } from './journalEntries.js';
import { journalWhere, type JournalFilter } from './journalFilter.js';
import { journalHledger } from './journalHledger.js';
import { journalJsonl } from './journalJsonl.js';
import { withSnapshot, type SnapshotReader } from './snapshot.js';

export const JOURNAL_FORMATS = ['csv', 'jsonl', 'hledger', 'beancount'] as const;
export type JournalFormat = (typeof JOURNAL_FORMATS)[number];

/** HTTP content type and file extension of each format. */
export const JOURNAL_MEDIA: Readonly<
  Record<JournalFormat, { contentType: string; extension: string }>
> = {
  csv: { contentType: 'text/csv; charset=utf-8', extension: 'csv' },
  jsonl: { contentType: 'application/x-ndjson; charset=utf-8', extension: 'jsonl' },
  hledger: { contentType: 'text/plain; charset=utf-8', extension: 'journal' },
  beancount: { contentType: 'text/plain; charset=utf-8', extension: 'beancount' },
};

export interface JournalProgress {
  entries: number;
  postings: number;
  /** Entries the export will hold (counted first, only when progress is asked for). */
  totalEntries: number;
}

export interface StreamJournalParameters {
  format: JournalFormat;
  filter?: JournalFilter;
  /** Rows per cursor page (default 2000): the bound on memory. */
  pageRows?: number;
  /** Called after each page. */
  onProgress?: (progress: JournalProgress) => void;
}

/** What each format writer gets: the snapshot, the filter, and the entries page by page. */
export interface JournalWriterContext {
  reader: SnapshotReader;
  filter: JournalFilter;
  entries: () => AsyncGenerator<JournalEntry[]>;
}

/**
 * The journal as text chunks (one per page of entries), from one snapshot. The same
 * filter over the same committed data gives the same bytes: a stable order (time, entry
 * id, line), exact decimal strings, no clock reading in the output. Consume it with
 * `for await`, `Readable.from`, or {@link writeChunks}.
 *
 * @example for await (const chunk of streamJournal(pool, { format: 'csv' })) out.write(chunk)
 */
export function streamJournal(
  pool: pg.Pool,
  params: StreamJournalParameters,
): AsyncGenerator<string> {
  const filter = params.filter ?? {};
  return withSnapshot(pool, async function* (reader) {
    let totalEntries = 0;
    if (params.onProgress) {
      const where = journalWhere(filter);
      const [count] = await reader.query<{ n: string }>(
        `select count(*)::text as n from ledger_entries e where ${where.sql}`,
        where.values,
      );
      totalEntries = Number(count?.n ?? 0);
      params.onProgress({ entries: 0, postings: 0, totalEntries });
    }
    const progress = { entries: 0, postings: 0, totalEntries };
    const context: JournalWriterContext = {
      reader,
      filter,
      entries: async function* () {
        for await (const page of readJournalEntries(reader, {
          filter,
          ...(params.pageRows ? { pageRows: params.pageRows } : {}),
        })) {
          yield page;
          if (params.onProgress) {
            progress.entries += page.length;
            for (const entry of page) progress.postings += entry.postings.length;
            params.onProgress({ ...progress });
          }
        }
      },
    };
    switch (params.format) {
      case 'csv':
        yield* journalCsv(context);
        break;
      case 'jsonl':
        yield* journalJsonl(context);
        break;
      case 'hledger':
        yield* journalHledger(context);
        break;
      case 'beancount':
        yield* journalBeancount(context);
        break;
    }
  });
}
