import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { AppError, badRequest } from '../errors.js';

/** What a verified Telegram Login Widget payload tells us about the person. */
export interface TelegramIdentity {
  telegramId: string;
  username: string | null;
  firstName: string | null;
  lastName: string | null;
  /** Only an https URL is kept (the dashboard shows it as an image). */
  photoUrl: string | null;
  /** Seconds since the epoch, as Telegram signed it. */
  authDateS: number;
  /** The payload's hash (lower-case hex): a payload signs in once. */
  payloadHash: string;
}

export interface VerifyTelegramLoginParameters {
  payload: unknown;
  botToken: string;
  /** Oldest auth_date accepted, in seconds before `now`. */
  maxAuthAgeS: number;
  /** Newest auth_date accepted, in seconds after `now` (clock skew). */
  maxClockSkewS: number;
  now: Date;
}

const MAX_FIELDS = 20;
const MAX_VALUE_LENGTH = 2048;
const FIELD_NAME = /^[a-z][a-z0-9_]{0,63}$/;

/**
 * Checks a Telegram Login Widget payload as Telegram documents it
 * (https://core.telegram.org/widgets/login#checking-authorization): the data-check-string is
 * every received field but `hash`, sorted by name, as `name=value` lines joined by "\n"; the
 * hash must be its HMAC-SHA256 under the SHA-256 of the bot token. Then auth_date must be
 * recent (and not in the future beyond the clock skew).
 *
 * Throws 400 for a payload that is not a flat object of strings and numbers, 401
 * `invalid_telegram_auth` for a bad signature, 401 `telegram_auth_expired` for a stale
 * or future auth_date.
 */
export function verifyTelegramLogin(params: VerifyTelegramLoginParameters): TelegramIdentity {
  const fields = readFields(params.payload);
  const hash = fields.get('hash');
  if (hash === undefined || !/^[0-9a-fA-F]{64}$/.test(hash))
    throw badRequest('hash must be the 64 hex digits Telegram sent', 'hash');
  fields.delete('hash');
  const expected = telegramLoginHash(fields, params.botToken);
  if (!timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(hash, 'hex')))
    throw unauthorizedLogin(
      'the Telegram login data is not signed by our bot',
      'invalid_telegram_auth',
    );

  // Signed by Telegram from here on; still checked, since our storage has rules of its own.
  const authDate = fields.get('auth_date');
  if (authDate === undefined || !/^\d{1,12}$/.test(authDate))
    throw badRequest('auth_date must be a whole number of seconds', 'auth_date');
  const authDateS = Number(authDate);
  const nowS = Math.floor(params.now.getTime() / 1000);
  if (nowS - authDateS > params.maxAuthAgeS)
    throw unauthorizedLogin(
      'this Telegram login is too old; sign in again',
      'telegram_auth_expired',
    );
  if (authDateS - nowS > params.maxClockSkewS)
    throw unauthorizedLogin('this Telegram login is dated in the future', 'telegram_auth_expired');
  const telegramId = fields.get('id');
  if (telegramId === undefined || !/^[1-9]\d{0,17}$/.test(telegramId))
    throw badRequest('id must be a positive whole number', 'id');
  const username = fields.get('username');
  const photoUrl = fields.get('photo_url');
  return {
    telegramId,
    username: username !== undefined && /^[A-Za-z0-9_]{1,64}$/.test(username) ? username : null,
    firstName: boundedName(fields.get('first_name')),
    lastName: boundedName(fields.get('last_name')),
    photoUrl: photoUrl !== undefined && isHttpsUrl(photoUrl) ? photoUrl : null,
    authDateS,
    payloadHash: hash.toLowerCase(),
  };
}

/** The hex HMAC-SHA256 Telegram puts in `hash` for these fields (without `hash`). */
export function telegramLoginHash(fields: ReadonlyMap<string, string>, botToken: string): string {
  const dataCheckString = [...fields.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('\n');
  const secretKey = createHash('sha256').update(botToken).digest();
  return createHmac('sha256', secretKey).update(dataCheckString).digest('hex');
}

/** The payload as name -> value text, exactly as the widget would have sent each value. */
function readFields(payload: unknown): Map<string, string> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload))
    throw badRequest('send the Telegram Login Widget data as a JSON object');
  const entries = Object.entries(payload as Record<string, unknown>);
  if (entries.length > MAX_FIELDS)
    throw badRequest(`the Telegram login data has more than ${MAX_FIELDS} fields`);
  const fields = new Map<string, string>();
  for (const [name, value] of entries) {
    if (!FIELD_NAME.test(name))
      throw badRequest(
        'the Telegram login data has a field name Telegram does not send',
        'payload',
      );
    let text: string;
    if (typeof value === 'string') text = value;
    else if (typeof value === 'number' && Number.isSafeInteger(value)) text = String(value);
    else throw badRequest(`${name} must be a string or a whole number`, name);
    if (text.length > MAX_VALUE_LENGTH)
      throw badRequest(`${name} is longer than ${MAX_VALUE_LENGTH} characters`, name);
    fields.set(name, text);
  }
  return fields;
}

function boundedName(value: string | undefined): string | null {
  if (value === undefined || value === '') return null;
  return value.slice(0, 256);
}

function isHttpsUrl(text: string): boolean {
  try {
    return new URL(text).protocol === 'https:';
  } catch {
    return false;
  }
}

function unauthorizedLogin(message: string, code: string): AppError {
  return new AppError(code, message, { status: 401, type: 'invalid_request_error' });
}
