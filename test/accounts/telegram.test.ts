import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import {
  BOT_TOKEN,
  call,
  nowS,
  rowCounts,
  signTelegram,
  expectErrorShape,
  type ErrorShape,
} from './support.js';

let database: TestDatabase;
let service: TestService;
const MAX_AGE_S = 3600;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { telegram: { botToken: BOT_TOKEN, maxAuthAgeS: MAX_AGE_S } },
  });
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

interface SignIn {
  token: string;
  tokenType: string;
  sessionId: string;
  expiresAt: string;
  userId: string;
  created: boolean;
}

const login = (payload: unknown) =>
  call<SignIn & ErrorShape>(service, 'POST', '/api/auth/telegram', { body: payload });

function widget(telegramId: number, extra: Record<string, string | number> = {}) {
  return signTelegram({
    id: telegramId,
    first_name: 'Ada',
    last_name: 'Lovelace',
    username: 'ada_l',
    photo_url: 'https://t.me/i/userpic/320/ada.jpg',
    auth_date: nowS() - 5,
    ...extra,
  });
}

describe('signing in with the Telegram Login Widget', () => {
  test('a signed payload creates the user from what Telegram says and returns a session token once', async () => {
    const result = await login(widget(900001));
    expect(result.status).toBe(200);
    expect(result.body.token).toMatch(/^lxs-[A-Za-z0-9_-]{43}$/);
    expect(result.body.created).toBe(true);
    expect(result.headers.get('cache-control')).toBe('no-store');
    expect(Date.parse(result.body.expiresAt) - Date.now()).toBeGreaterThan(29 * 86_400_000);

    const me = await call<Record<string, unknown>>(service, 'GET', '/api/me', {
      token: result.body.token,
    });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({
      id: result.body.userId,
      telegramId: '900001',
      username: 'ada_l',
      firstName: 'Ada',
      lastName: 'Lovelace',
      photoUrl: 'https://t.me/i/userpic/320/ada.jpg',
      status: 'active',
      balance: { currency: 'USD', available: '0', posted: '0', held: '0' },
      auth: { via: 'session', sessionId: result.body.sessionId },
    });

    // Only the token's hash is stored.
    const { rows } = await database.pool.query(`select * from sessions where id = $1`, [
      result.body.sessionId,
    ]);
    expect(JSON.stringify(rows)).not.toContain(result.body.token);
    expect(rows[0].token_hash).toMatch(/^[0-9a-f]{64}$/);
  });

  test('signing in again updates the profile of the same user', async () => {
    const first = await login(widget(900002, { username: 'old_name' }));
    const second = await login(widget(900002, { username: 'new_name', auth_date: nowS() - 1 }));
    expect(second.status).toBe(200);
    expect(second.body.userId).toBe(first.body.userId);
    expect(second.body.created).toBe(false);
    const me = await call<{ username: string }>(service, 'GET', '/api/me', {
      token: first.body.token,
    });
    expect(me.body.username).toBe('new_name');
  });

  test('a user the admin created signs in to the same account', async () => {
    const { userId } = await userWithKey(service, { telegramId: 900003 });
    const result = await login(widget(900003));
    expect(result.body.userId).toBe(userId);
  });

  test('a photo URL that is not https is not kept (the dashboard shows it as an image)', async () => {
    const result = await login(widget(900004, { photo_url: 'javascript:alert(1)' }));
    expect(result.status).toBe(200);
    const me = await call<{ photoUrl: string | null }>(service, 'GET', '/api/me', {
      token: result.body.token,
    });
    expect(me.body.photoUrl).toBeNull();
  });
});

describe('refused payloads change nothing', () => {
  const cases: Array<[string, () => unknown, number, string]> = [
    [
      'a tampered field',
      () => ({ ...widget(900100), username: 'someone_else' }),
      401,
      'invalid_telegram_auth',
    ],
    ['a tampered id', () => ({ ...widget(900100), id: 900101 }), 401, 'invalid_telegram_auth'],
    [
      'a field added after signing',
      () => ({ ...widget(900100), is_admin: 'true' }),
      401,
      'invalid_telegram_auth',
    ],
    [
      'a field removed after signing',
      () => {
        const { last_name: _drop, ...rest } = widget(900100);
        return rest;
      },
      401,
      'invalid_telegram_auth',
    ],
    [
      'signed with another bot token',
      () => signTelegram({ id: 900100, auth_date: nowS() }, '999:another-bot'),
      401,
      'invalid_telegram_auth',
    ],
    [
      'an expired auth_date',
      () => widget(900100, { auth_date: nowS() - MAX_AGE_S - 10 }),
      401,
      'telegram_auth_expired',
    ],
    [
      'an auth_date in the future',
      () => widget(900100, { auth_date: nowS() + 600 }),
      401,
      'telegram_auth_expired',
    ],
    ['no hash', () => ({ id: 900100, auth_date: nowS() }), 400, 'invalid_request'],
    ['a malformed hash', () => ({ ...widget(900100), hash: 'zz' }), 400, 'invalid_request'],
    [
      'a nested object value',
      () => ({ ...widget(900100), username: { $ne: null } }),
      400,
      'invalid_request',
    ],
    ['an array body', () => [widget(900100)], 400, 'invalid_request'],
    ['a null body', () => null, 400, 'invalid_request'],
    [
      'a field name with a newline (data-check-string injection)',
      () => ({ ...widget(900100), 'x\nid': '1' }),
      400,
      'invalid_request',
    ],
    [
      'a huge value',
      () => ({ ...widget(900100), first_name: 'A'.repeat(100_000) }),
      400,
      'invalid_request',
    ],
  ];
  test.each(cases)('%s', async (_name, payload, status, code) => {
    const before = await rowCounts(database.pool);
    const result = await login(payload());
    expect(result.status).toBe(status);
    expectErrorShape(result.body, code);
    expect(await rowCounts(database.pool)).toEqual(before);
  });

  test('a replayed payload is accepted once only', async () => {
    const payload = widget(900200);
    expect((await login(payload)).status).toBe(200);
    const before = await rowCounts(database.pool);
    const replay = await login(payload);
    expect(replay.status).toBe(401);
    expect(replay.body.error.code).toBe('telegram_auth_replayed');
    // The same payload with its fields reordered is the same payload.
    const reordered = Object.fromEntries(Object.entries(payload).reverse());
    expect((await login(reordered)).body.error.code).toBe('telegram_auth_replayed');
    expect(await rowCounts(database.pool)).toEqual(before);
    const { rows } = await database.pool.query(
      `select expires_at from telegram_login_replays where payload_hash = $1`,
      [payload['hash']],
    );
    // Kept until the payload would be refused as too old anyway.
    expect(new Date(rows[0].expires_at).getTime() / 1000).toBeGreaterThanOrEqual(
      Number(payload['auth_date']) + MAX_AGE_S,
    );
  });

  test('a suspended user cannot sign in', async () => {
    const { userId } = await userWithKey(service, { telegramId: 900300 });
    await database.pool.query(`update users set status = 'suspended' where id = $1`, [userId]);
    const before = await rowCounts(database.pool);
    const result = await login(widget(900300));
    expect(result.status).toBe(403);
    expect(result.body.error.code).toBe('account_suspended');
    expect(await rowCounts(database.pool)).toEqual(before);
  });
});

describe('sessions', () => {
  test('logout revokes the session at once', async () => {
    const { body } = await login(widget(900400));
    const out = await call<{ sessionId: string; revokedAt: string }>(
      service,
      'POST',
      '/api/auth/logout',
      { token: body.token },
    );
    expect(out.status).toBe(200);
    expect(out.body.sessionId).toBe(body.sessionId);
    const after = await call<ErrorShape>(service, 'GET', '/api/me', { token: body.token });
    expect(after.status).toBe(401);
    expect(after.body.error.code).toBe('session_revoked');
  });

  test('an expired session is refused', async () => {
    const { body } = await login(widget(900401));
    await database.pool.query(
      `update sessions set created_at = now() - interval '2 hours', expires_at = now() - interval '1 second' where id = $1`,
      [body.sessionId],
    );
    const result = await call<ErrorShape>(service, 'GET', '/api/me/balance', { token: body.token });
    expect(result.status).toBe(401);
    expect(result.body.error).toMatchObject({
      code: 'session_expired',
      type: 'invalid_request_error',
    });
  });

  test('logout with an API key is refused: keys are revoked, not signed out', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 900402 });
    const result = await call<ErrorShape>(service, 'POST', '/api/auth/logout', { token: apiKey });
    expect(result.status).toBe(400);
    expect(result.body.error.code).toBe('not_a_session');
  });

  test('an unknown or malformed session token is a 401', async () => {
    for (const token of [`lxs-${'A'.repeat(43)}`, 'lxs-short', 'garbage']) {
      const result = await call<ErrorShape>(service, 'GET', '/api/me', { token });
      expect(result.status).toBe(401);
      expect(result.body.error.type).toBe('invalid_request_error');
    }
  });
});

test('with a bot token configured the development sign-in does not exist', async () => {
  const before = await rowCounts(database.pool);
  const result = await call<ErrorShape>(service, 'POST', '/api/auth/dev', {
    body: { telegramId: 900001 },
  });
  expect(result.status).toBe(404);
  expect(result.body.error.code).toBe('not_found');
  expect(await rowCounts(database.pool)).toEqual(before);
});
