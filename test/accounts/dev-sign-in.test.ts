import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, type TestService } from '../support/service.js';
import { call, devSignIn, nowS, rowCounts, signTelegram, type ErrorShape } from './support.js';

let database: TestDatabase;
let service: TestService;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({ databaseUrl: database.url });
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

test('without a bot token Telegram sign-in answers 503 telegram_not_configured', async () => {
  const before = await rowCounts(database.pool);
  const result = await call<ErrorShape>(service, 'POST', '/api/auth/telegram', {
    body: signTelegram({ id: 1, auth_date: nowS() }),
  });
  expect(result.status).toBe(503);
  expect(result.body.error.code).toBe('telegram_not_configured');
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('the development sign-in creates a user and a session', async () => {
  const session = await devSignIn(service, 4242, 'dev_user');
  expect(session.token).toMatch(/^lxs-/);
  const me = await call<{ telegramId: string; username: string }>(service, 'GET', '/api/me', {
    token: session.token,
  });
  expect(me.body).toMatchObject({ telegramId: '4242', username: 'dev_user' });
  const again = await devSignIn(service, 4242);
  expect(again.userId).toBe(session.userId);
  const { rows } = await database.pool.query(`select method from sessions where user_id = $1`, [
    session.userId,
  ]);
  expect(rows.map((r) => r.method)).toEqual(['dev', 'dev']);
});

test('the development sign-in validates its input', async () => {
  const before = await rowCounts(database.pool);
  for (const body of [
    { telegramId: '1; drop table users; --' },
    { telegramId: -5 },
    { telegramId: 5, username: "'; drop table users; --" },
    [1],
  ]) {
    const result = await call<ErrorShape>(service, 'POST', '/api/auth/dev', { body });
    expect(result.status).toBe(400);
    expect(result.body.error.type).toBe('invalid_request_error');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('a request that came through a proxy never gets a development session, whatever it says its address is', async () => {
  // Behind a proxy with http.trustProxy, `ctx.ip` is whatever X-Forwarded-For says, which
  // any client writes; and a proxy on this machine makes every client's socket loopback.
  const proxied = await startTestService({
    databaseUrl: database.url,
    config: { http: { trustProxy: true } },
  });
  try {
    const before = await rowCounts(database.pool);
    for (const target of [proxied, service]) {
      for (const headers of [
        { 'x-forwarded-for': '127.0.0.1' },
        { 'x-forwarded-for': '203.0.113.9, 127.0.0.1' },
        { forwarded: 'for=127.0.0.1' },
        { 'x-real-ip': '203.0.113.9' },
      ]) {
        const result = await call<ErrorShape>(target, 'POST', '/api/auth/dev', {
          body: { telegramId: 777_001 },
          headers,
        });
        expect(result.status).toBe(403);
        expect(result.body.error.code).toBe('dev_sign_in_local_only');
      }
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    // A client on this machine, direct, still signs in.
    expect((await devSignIn(proxied, 777_001)).token).toMatch(/^lxs-/);
  } finally {
    await proxied.stop();
  }
});
