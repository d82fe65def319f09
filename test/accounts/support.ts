import { createHash, createHmac } from 'node:crypto';
import { expect } from 'vitest';
import type pg from 'pg';

export const BOT_TOKEN = '123456:TEST-bot-token-for-lingxi';

export interface ErrorShape {
  error: { message: string; type: string; code: string | null; param: string | null };
}

/** A Telegram Login Widget payload signed the way Telegram signs it (independent of src/). */
export function signTelegram(
  fields: Record<string, string | number>,
  botToken = BOT_TOKEN,
): Record<string, string | number> {
  const dataCheckString = Object.keys(fields)
    .sort()
    .map((name) => `${name}=${fields[name]}`)
    .join('\n');
  const secret = createHash('sha256').update(botToken).digest();
  const hash = createHmac('sha256', secret).update(dataCheckString).digest('hex');
  return { ...fields, hash };
}

export function nowS(): number {
  return Math.floor(Date.now() / 1000);
}

/** Calls the service with an optional bearer token; the body is JSON unless a string. */
export async function call<T = unknown>(
  service: { url: string },
  method: string,
  path: string,
  options: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: T; headers: Headers; text: string }> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${service.url}${path}`, {
    method,
    headers,
    ...(options.body === undefined
      ? {}
      : { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) }),
  });
  const text = await response.text();
  let body: unknown = text;
  if ((response.headers.get('content-type') ?? '').includes('json') && text !== '')
    body = JSON.parse(text);
  return { status: response.status, body: body as T, headers: response.headers, text };
}

/** Signs in through the development route (services without a bot token). */
export async function devSignIn(
  service: { url: string },
  telegramId: number,
  username?: string,
): Promise<{ token: string; userId: string; sessionId: string }> {
  const result = await call<{ token: string; userId: string; sessionId: string }>(
    service,
    'POST',
    '/api/auth/dev',
    { body: { telegramId, ...(username ? { username } : {}) } },
  );
  if (result.status !== 200) throw new Error(`dev sign-in: ${result.text}`);
  return result.body;
}

/** Row counts of the tables a refused request must leave alone. */
export async function rowCounts(pool: pg.Pool): Promise<Record<string, number | string>> {
  const { rows } = await pool.query<Record<string, string>>(`
    select (select count(*) from users) as users,
           (select count(*) from api_keys) as api_keys,
           (select count(*) from api_keys where revoked_at is not null) as revoked_keys,
           (select count(*) from sessions) as sessions,
           (select count(*) from sessions where revoked_at is not null) as revoked_sessions,
           (select count(*) from usage_records) as usage_records,
           (select count(*) from telegram_login_replays) as login_replays,
           (select count(*) from ledger_entries) as entries,
           (select count(*) from ledger_postings) as postings,
           (select count(*) from users where status <> 'active') as inactive_users,
           (select string_agg(coalesce(username, '-'), ',' order by id) from users) as usernames`);
  return Object.fromEntries(
    Object.entries(rows[0]!).map(([k, v]) => [k, k === 'usernames' ? v : Number(v)]),
  );
}

/** Asserts the contract's error shape: exactly {error: {message, type, code, param}}. */
export function expectErrorShape(
  body: unknown,
  code: string,
  type = 'invalid_request_error',
): void {
  expect(Object.keys(body as object)).toEqual(['error']);
  const error = (body as ErrorShape).error;
  expect(Object.keys(error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof error.message).toBe('string');
  expect(error.message.length).toBeGreaterThan(0);
  expect(error.type).toBe(type);
  expect(error.code).toBe(code);
  expect(error.param === null || typeof error.param === 'string').toBe(true);
}
