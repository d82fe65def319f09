import { badRequest } from '../errors.js';
import { isOffsetInRange, startsWithCalendarDate } from '../time/isoTime.js';

/**
 * Which time an export filters and sorts by. `created`: when the entry was written (the
 * commit's transaction time; the default, because it only ever grows, so a past range never
 * gains entries once sealed). `effective`: the business time of the event (a block's time).
 */
export type TimeBasis = 'created' | 'effective';

export const TIME_BASES: readonly TimeBasis[] = ['created', 'effective'];

/** What a journal export covers: the half-open time range [from, to) and an account subtree. */
export interface JournalFilter {
  /** ISO 8601, inclusive; a date or a time without a zone is UTC. */
  from?: string;
  /** ISO 8601, exclusive. */
  to?: string;
  /**
   * Entries with at least one posting on this account or below it (`liabilities:customers:42`
   * also matches `liabilities:customers:42:sub`, never `liabilities:customers:420`). The
   * entries are exported whole, so every export still balances.
   */
  account?: string;
  basis?: TimeBasis;
}

/** A date, or a date and a time (hours 00-23, minutes and seconds 00-59) with an optional zone. */
const ISO_TIME =
  /^\d{4}-\d{2}-\d{2}(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/;
const ACCOUNT_PREFIX = /^[a-z]+(?::[A-Za-z0-9_.-]+)*:?$/;

/**
 * Checks a filter from the CLI or a query string; throws a 400 AppError naming the bad field.
 * Unset fields stay unset (exactOptionalPropertyTypes).
 */
export function parseJournalFilter(input: {
  from?: unknown;
  to?: unknown;
  account?: unknown;
  basis?: unknown;
}): JournalFilter {
  const filter: JournalFilter = {};
  for (const field of ['from', 'to'] as const) {
    const value = input[field];
    if (value === undefined || value === null || value === '') continue;
    if (typeof value !== 'string' || !isExactTime(value)) {
      throw badRequest(
        `${field} must be an ISO 8601 date or time such as 2026-11-27 or 2026-11-27T10:00:00Z`,
        field,
      );
    }
    filter[field] = value;
  }
  if (
    filter.from !== undefined &&
    filter.to !== undefined &&
    epochMicros(filter.from) > epochMicros(filter.to)
  )
    throw badRequest(`from (${filter.from}) must not be after to (${filter.to})`, 'from');
  const account = input.account;
  if (account !== undefined && account !== null && account !== '') {
    if (typeof account !== 'string' || account.length > 200 || !ACCOUNT_PREFIX.test(account)) {
      throw badRequest(
        'account must be an account code or prefix such as liabilities:customers',
        'account',
      );
    }
    filter.account = account;
  }
  const basis = input.basis;
  if (basis !== undefined && basis !== null && basis !== '') {
    if (!TIME_BASES.includes(basis as TimeBasis)) {
      throw badRequest(`basis must be one of ${TIME_BASES.join(', ')}`, 'basis');
    }
    filter.basis = basis as TimeBasis;
  }
  return filter;
}

/**
 * An exact time as microseconds since the epoch (PostgreSQL's precision; JS Date stops at
 * milliseconds, and `.0005` and `.0001` are one millisecond to it).
 */
function epochMicros(value: string): bigint {
  const fraction = /\.(\d{1,6})/.exec(value)?.[1] ?? '';
  return BigInt(epochMs(value.replace(/\.\d{1,6}/, ''))) * 1000n + BigInt(fraction.padEnd(6, '0'));
}

/** An exact time as milliseconds since the epoch; a time without a zone is UTC, as in SQL here. */
function epochMs(value: string): number {
  const iso = value.replace(' ', 'T');
  if (!iso.includes('T')) return Date.parse(iso); // a date alone: UTC midnight
  const zone = /(Z|([+-]\d{2}):?(\d{2})?)$/.exec(iso.slice(10));
  if (!zone) return Date.parse(`${iso}Z`);
  if (zone[1] === 'Z') return Date.parse(iso);
  return Date.parse(`${iso.slice(0, iso.length - zone[0].length)}${zone[2]}:${zone[3] ?? '00'}`);
}

/**
 * The pattern plus what it cannot say: a real calendar date and an offset within ±14:00.
 * Anything else would pass here and fail in PostgreSQL's ::timestamptz cast, after an
 * export has begun.
 */
function isExactTime(value: string): boolean {
  const match = ISO_TIME.exec(value);
  if (!match || !startsWithCalendarDate(value)) return false;
  const zone = match[1];
  return zone === undefined || isOffsetInRange(zone);
}

/**
 * The SQL condition for a filter over `ledger_entries e`, with its parameters numbered from
 * `firstParam`. Times are compared in the database (the session is UTC).
 */
export function journalWhere(
  filter: JournalFilter,
  firstParam = 1,
): { sql: string; values: unknown[] } {
  const column = timeColumn(filter.basis);
  const clauses: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown) => {
    values.push(value);
    return `$${firstParam + values.length - 1}`;
  };
  if (filter.from !== undefined) clauses.push(`e.${column} >= ${param(filter.from)}::timestamptz`);
  if (filter.to !== undefined) clauses.push(`e.${column} < ${param(filter.to)}::timestamptz`);
  if (filter.account !== undefined) {
    const account = filter.account.replace(/:$/, '');
    const exact = param(account);
    const below = param(`${escapeLike(account)}:%`);
    clauses.push(`exists (select 1 from ledger_postings fp join ledger_accounts fa on fa.id = fp.account_id
      where fp.entry_id = e.id and (fa.code = ${exact} or fa.code like ${below}))`);
  }
  return { sql: clauses.length ? clauses.join(' and ') : 'true', values };
}

export function timeColumn(basis: TimeBasis | undefined): 'created_at' | 'effective_at' {
  return basis === 'effective' ? 'effective_at' : 'created_at';
}

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}
