import { badRequest } from '../errors.js';

/**
 * A Telegram id from a request body: a string of digits, or a JSON number only while it is
 * exact. A number past 2^53 has already been rounded by JSON.parse (123456789012345678
 * arrives as 123456789012345680), so taking it would name someone else; such ids must come
 * as strings. Anything else (an array, a fraction, a sign) is a 400.
 */
export function parseTelegramId(value: unknown): string {
  const text = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
  if (typeof text !== 'string' || !/^[1-9]\d{0,17}$/.test(text))
    throw badRequest('telegramId must be a positive whole number', 'telegramId');
  return text;
}
