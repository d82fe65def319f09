import { badRequest } from '../errors.js';
import { isOffsetInRange, startsWithCalendarDate } from '../time/isoTime.js';

/** A query string value as Koa gives it. */
export type QueryValue = string | string[] | undefined;

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;
const DATE_TIME =
  /^(?<seconds>\d{4}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?)(?:\.(?<fraction>\d{1,9}))?(?<zone>Z|[+-]\d{2}:\d{2})$/;

/** One value of a query parameter, or undefined; a repeated parameter is a 400. */
export function single(value: QueryValue, param: string): string | undefined {
  if (Array.isArray(value)) throw badRequest(`give ${param} once`, param);
  return value === '' ? undefined : value;
}

/**
 * `YYYY-MM-DD` (UTC midnight) or an ISO 8601 time with a zone, such as `2026-11-27T10:00:00Z`,
 * as exact UTC text for PostgreSQL: `2026-11-27T02:00:00.000Z`, or with six fractional digits
 * when the time has microseconds (`2026-11-27T02:00:00.123456Z`), as the ledger keeps them. A
 * JS Date would cut `.123456` to `.123`, moving a bound before a line booked at `.123456`.
 * Digits past the microsecond must be zeros (`.123456000`): the ledger cannot tell them
 * apart, so `.1234567` is a 400 rather than rounded. The date must be on the calendar and
 * the offset within ±14:00: JS Date would move `2026-02-30` to March 2 without a word.
 */
export function parseTime(value: QueryValue, param: string): string | undefined {
  const text = single(value, param);
  if (text === undefined) return undefined;
  const match = DATE_TIME.exec(text)?.groups;
  if (
    text.length > 40 ||
    !(DATE_ONLY.test(text) || (match !== undefined && isOffsetInRange(match['zone']!))) ||
    !startsWithCalendarDate(text)
  )
    throw badRequest(
      `${param} must be a date (2026-11-27) or an ISO 8601 time with a zone (2026-11-27T10:00:00Z)`,
      param,
    );
  const fraction = (match?.['fraction'] ?? '').padEnd(9, '0');
  if (!fraction.endsWith('000'))
    throw badRequest(
      `${param} has digits past the microsecond, which the ledger does not keep (at most 6 fractional digits)`,
      param,
    );
  // Offsets are whole minutes: the fraction is the same in UTC.
  const whole = new Date(
    DATE_ONLY.test(text) ? `${text}T00:00:00Z` : `${match!['seconds']}${match!['zone']}`,
  );
  const year = whole.getUTCFullYear();
  if (Number.isNaN(whole.getTime()) || year < 1 || year > 9999)
    throw badRequest(`${param} is not a valid time`, param);
  const micro = fraction.slice(0, 6);
  return `${whole.toISOString().slice(0, 19)}.${micro.endsWith('000') ? micro.slice(0, 3) : micro}Z`;
}

/** A time range: `from` inclusive, `to` exclusive; `from` must come before `to`. */
export function parseRange(query: { from?: QueryValue; to?: QueryValue }): {
  from?: string;
  to?: string;
} {
  const from = parseTime(query.from, 'from');
  const to = parseTime(query.to, 'to');
  if (from !== undefined && to !== undefined && !(microsKey(from) < microsKey(to)))
    throw badRequest('from must be before to', 'from');
  return { ...(from ? { from } : {}), ...(to ? { to } : {}) };
}

/** parseTime's text with six fractional digits: such texts sort as their instants do. */
function microsKey(time: string): string {
  return time.length === 24 ? `${time.slice(0, 23)}000Z` : time;
}

/** A page size between 1 and `max`. */
export function parseLimit(value: QueryValue, defaultLimit: number, max: number): number {
  const text = single(value, 'limit');
  if (text === undefined) return defaultLimit;
  if (!/^\d{1,6}$/.test(text) || Number(text) < 1 || Number(text) > max)
    throw badRequest(`limit must be a whole number from 1 to ${max}`, 'limit');
  return Number(text);
}

/** Printable ASCII text of bounded length (no control characters), or undefined. */
export function parseText(value: QueryValue, param: string, maxLength: number): string | undefined {
  const text = single(value, param);
  if (text === undefined) return undefined;
  if (text.length > maxLength || !/^[\x20-\x7e]+$/.test(text))
    throw badRequest(`${param} must be printable text of at most ${maxLength} characters`, param);
  return text;
}

/** What a cursor part must pass: a pattern, or any check of the same shape. */
export interface CursorPart {
  test(part: string): boolean;
}

/** A cursor made by `encodeCursor`, checked against `patterns` part by part. */
export function decodeCursor(value: QueryValue, patterns: CursorPart[]): string[] | undefined {
  const text = single(value, 'cursor');
  if (text === undefined) return undefined;
  const invalid = () => badRequest('cursor is not one this API gave out', 'cursor');
  if (text.length > 200 || !/^[A-Za-z0-9_-]+$/.test(text)) throw invalid();
  let parts: unknown;
  try {
    parts = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  if (
    !Array.isArray(parts) ||
    parts.length !== patterns.length ||
    !parts.every((part, i) => typeof part === 'string' && patterns[i]!.test(part))
  )
    throw invalid();
  return parts as string[];
}

export function encodeCursor(parts: string[]): string {
  return Buffer.from(JSON.stringify(parts), 'utf8').toString('base64url');
}

export function iso(value: Date | string | null): string | null {
  return value === null ? null : new Date(value).toISOString();
}
