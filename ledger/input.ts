import { InvalidEntryError, InvalidLimitError } from './errors.js';

/** Most bytes an entry's or a hold's metadata may take as JSON. */
export const MAX_METADATA_BYTES = 64 * 1024;

/**
 * Checks what a command stores besides amounts, before anything is queued: a value PostgreSQL
 * would refuse (a NUL character, half of a surrogate pair, a date that is not one), or that
 * cannot be written at all (a BigInt, a cycle), is an InvalidEntryError naming the field, never
 * a database error at write time (which failed every command batched with it).
 */
export function checkCommandInput(input: {
  metadata?: unknown;
  description?: unknown;
  idempotencyKey?: unknown;
  dates?: Record<string, unknown>;
}): void {
  if (input.metadata !== undefined) checkMetadata(input.metadata);
  if (input.description !== undefined) checkText(input.description, 'description', 10_000);
  if (input.idempotencyKey !== undefined) checkText(input.idempotencyKey, 'idempotencyKey', 255);
  for (const [field, date] of Object.entries(input.dates ?? {})) {
    if (date !== undefined) checkDate(date, field);
  }
}

function checkMetadata(metadata: unknown): void {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new InvalidEntryError('metadata must be a JSON object', { param: 'metadata' });
  }
  let json: string;
  try {
    json = JSON.stringify(metadata);
  } catch {
    throw new InvalidEntryError(
      'metadata must be a JSON object (no BigInt, no cycle, nothing that cannot be written)',
      { param: 'metadata' },
    );
  }
  if (Buffer.byteLength(json, 'utf8') > MAX_METADATA_BYTES) {
    throw new InvalidEntryError(`metadata must be at most ${MAX_METADATA_BYTES} bytes as JSON`, {
      param: 'metadata',
    });
  }
  const bad = findBadText(JSON.parse(json) as unknown);
  if (bad !== null) {
    throw new InvalidEntryError(`metadata ${bad}`, { param: 'metadata' });
  }
}

/** The first key or string value PostgreSQL's jsonb refuses, described, or null. */
function findBadText(value: unknown): string | null {
  if (typeof value === 'string') return textProblem(value);
  if (Array.isArray(value)) {
    for (const item of value) {
      const bad = findBadText(item);
      if (bad !== null) return bad;
    }
    return null;
  }
  if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      const bad = textProblem(key) ?? findBadText(item);
      if (bad !== null) return bad;
    }
  }
  return null;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function textProblem(text: string): string | null {
  if (text.includes('\u0000')) return 'must not contain a NUL character (\\u0000)';
  if (LONE_SURROGATE.test(text)) return 'must not contain half of a UTF-16 surrogate pair';
  return null;
}

function checkText(value: unknown, field: string, maxLength: number): void {
  const shape = field === 'idempotencyKey' ? `a text of 1-${maxLength} characters` : 'a text';
  if (
    typeof value !== 'string' ||
    value.length > maxLength ||
    (field === 'idempotencyKey' && value.length === 0)
  ) {
    throw new InvalidEntryError(`${field} must be ${shape}`, { param: field });
  }
  const problem = textProblem(value);
  if (problem !== null) throw new InvalidEntryError(`${field} ${problem}`, { param: field });
}

function checkDate(value: unknown, field: string): void {
  if (!(value instanceof Date) || !Number.isFinite(value.getTime())) {
    throw new InvalidEntryError(`${field} must be a valid date`, { param: field });
  }
  const year = value.getUTCFullYear();
  if (year < 1 || year > 9999) {
    throw new InvalidEntryError(`${field} must be a date between the years 1 and 9999`, {
      param: field,
    });
  }
}

/**
 * A page or batch size: absent is `fallback`, above `max` is `max`, anything but a whole
 * number of at least 1 (NaN, 2.5, 0, -3, a string) is an InvalidLimitError, never a database
 * error nor a silent "nothing".
 */
export function checkLimit(value: unknown, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new InvalidLimitError(value);
  }
  return Math.min(value, max);
}
