/**
 * Exact checks for the ISO 8601 times the APIs take. A pattern alone lets through
 * `2026-02-30`, `T25:00` or a `+99` offset, which JS Date silently moves to another instant
 * and PostgreSQL refuses with an error; these checks hold values to what both read alike.
 */

/** The widest zone offset in use (UTC+14:00, Kiribati), in minutes. */
const MAX_OFFSET_MINUTES = 14 * 60;

/** True for a real date of the proleptic Gregorian calendar from year 1 (no year 0, no Feb 30). */
export function isCalendarDate(year: number, month: number, day: number): boolean {
  if (!Number.isInteger(year) || year < 1 || year > 9999) return false;
  if (!Number.isInteger(month) || month < 1 || month > 12) return false;
  const leap = (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]!;
  return Number.isInteger(day) && day >= 1 && day <= days;
}

/** True when `text` starts with a real `YYYY-MM-DD` date. */
export function startsWithCalendarDate(text: string): boolean {
  const match = /^(\d{4})-(\d{2})-(\d{2})/.exec(text);
  return match !== null && isCalendarDate(Number(match[1]), Number(match[2]), Number(match[3]));
}

/** True for a zone offset (`+05`, `+0530`, `-05:30`) within ±14:00; `Z` is offset zero. */
export function isOffsetInRange(offset: string): boolean {
  if (offset === 'Z') return true;
  const match = /^[+-](\d{2}):?(\d{2})?$/.exec(offset);
  if (!match) return false;
  const hours = Number(match[1]);
  const minutes = Number(match[2] ?? '0');
  return minutes < 60 && hours * 60 + minutes <= MAX_OFFSET_MINUTES;
}
