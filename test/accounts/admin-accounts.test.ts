import { describe, expect, test } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { ADMIN_TOKEN, admin, userWithKey, type TestService } from '../support/service.js';
import { useGatewayStack } from '../gateway/fixtures.js';
import { call, devSignIn, expectErrorShape, rowCounts } from './support.js';

let database: TestDatabase;
let service: TestService;

useGatewayStack(
  (stack) => ({ database, service } = stack),
  (config) => ({ ...config, telegram: { devSignIn: true } }),
);

async function auditCount(db: TestDatabase): Promise<number> {
  const { rows } = await db.pool.query<{ n: string }>('select count(*)::text as n from audit_log');
  return Number(rows[0]!.n);
}

interface AuditPage {
  data: Array<{
    id: string;
    at: string;
    actor: string;
    action: string;
    target: string | null;
    details: Record<string, unknown>;
    ip: string | null;
    requestId: string | null;
  }>;
  nextCursor: string | null;
}

describe('looking users up', () => {
  test('by id, by Telegram id and by username (case-insensitive)', async () => {
    const { userId, keyId } = await userWithKey(service, { telegramId: 6001, balance: '3' });
    await devSignIn(service, 6001, 'Dora_Explorer');
    const byId = await admin<Record<string, unknown>>(service, 'GET', `/users/${userId}`);
    expect(byId.status).toBe(200);
    expect(byId.body).toMatchObject({
      id: userId,
      telegramId: '6001',
      username: 'Dora_Explorer',
      status: 'active',
      suspendedAt: null,
      erasedAt: null,
      balance: { currency: 'USD', available: '3', posted: '3', held: '0' },
    });
    expect((byId.body['keys'] as Array<{ id: string }>).map((k) => k.id)).toEqual([keyId]);
    expect(JSON.stringify(byId.body)).not.toMatch(/[0-9a-f]{64}/);

    const byTelegram = await admin<{ data: Array<{ id: string }> }>(
      service,
      'GET',
      '/users?telegramId=6001',
    );
    expect(byTelegram.body.data.map((u) => u.id)).toEqual([userId]);
    const byName = await admin<{ data: Array<{ id: string }> }>(
      service,
      'GET',
      '/users?username=@dora_explorer',
    );
    expect(byName.body.data.map((u) => u.id)).toEqual([userId]);
    const none = await admin<{ data: unknown[] }>(service, 'GET', '/users?telegramId=424242');
    expect(none.body.data).toEqual([]);
  });

  test('unknown users are 404s; a lookup needs exactly one criterion', async () => {
    for (const id of ['999999', 'abc', '0']) {
      const result = await admin(service, 'GET', `/users/${id}`);
      expect(result.status).toBe(404);
      expectErrorShape(result.body, 'user_not_found');
    }
    for (const query of ['', '?telegramId=1&username=x', '?telegramId=-1', '?username=a%20b']) {
      const result = await admin(service, 'GET', `/users${query}`);
      expect(result.status, query).toBe(400);
      expectErrorShape(result.body, 'invalid_request');
    }
  });
});

describe('creating a user', () => {
  test('a telegramId that JSON cannot carry exactly, or that is no number, is a 400; nothing is written', async () => {
    const before = await rowCounts(database.pool);
    for (const raw of [
      '{"telegramId": 123456789012345678}', // past 2^53: JSON.parse makes it ...680
      '{"telegramId": 9007199254740993}',
      '{"telegramId": ["5"]}',
      '{"telegramId": [5]}',
      '{"telegramId": 5.5}',
      '{"telegramId": -5}',
      '{"telegramId": "+5"}',
      '{"telegramId": true}',
    ]) {
      const result = await call(service, 'POST', '/admin/users', { token: ADMIN_TOKEN, body: raw });
      expect({ raw, status: result.status }).toEqual({ raw, status: 400 });
      expectErrorShape(result.body, 'invalid_request');
      expect((result.body as { error: { param: string } }).error.param).toBe('telegramId');
    }
    expect(await rowCounts(database.pool)).toEqual(before);
  });

  test('a large telegramId given as a string, or a safe JSON number, is stored exactly', async () => {
    for (const [raw, telegramId] of [
      ['{"telegramId": "123456789012345678"}', '123456789012345678'],
      ['{"telegramId": 9007199254740991}', '9007199254740991'],
    ] as const) {
      const created = await call<{ id: string }>(service, 'POST', '/admin/users', {
        token: ADMIN_TOKEN,
        body: raw,
      });
      expect(created.status).toBe(201);
      const user = await admin<{ telegramId: string }>(service, 'GET', `/users/${created.body.id}`);
      expect(user.body.telegramId).toBe(telegramId);
    }
  });
});

describe('user ids past the bigint range', () => {
  test('are 404 user_not_found on every admin route, and nothing is written', async () => {
    const before = await rowCounts(database.pool);
    const audited = await auditCount(database);
    // 19 digits: the largest bigint, one past it, and the largest 19-digit number.
    for (const id of ['9223372036854775807', '9223372036854775808', '9999999999999999999']) {
      for (const [method, path, body] of [
        ['GET', `/admin/users/${id}`, undefined],
        ['GET', `/admin/users/${id}/balance`, undefined],
        ['POST', `/admin/users/${id}/keys`, {}],
        ['POST', `/admin/users/${id}/adjustments`, { amount: '1', reason: 'goodwill' }],
        ['POST', `/admin/users/${id}/suspend`, { reason: 'abuse' }],
        ['POST', `/admin/users/${id}/unsuspend`, { reason: 'ok' }],
        ['DELETE', `/admin/users/${id}/keys/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b`, undefined],
        ['GET', `/admin/exports/statement?user=${id}`, undefined],
      ] as const) {
        const result = await call(service, method, path, {
          token: ADMIN_TOKEN,
          ...(body ? { body } : {}),
        });
        expect({ path, status: result.status }).toEqual({ path, status: 404 });
        expectErrorShape(result.body, 'user_not_found');
      }
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect(await auditCount(database)).toBe(audited);
  });

  test('the largest id a user can have still finds that user', async () => {
    const max = '9223372036854775807';
    await database.pool.query(
      `insert into users (id, telegram_id) overriding system value values ($1, '6009')`,
      [max],
    );
    const found = await admin<{ id: string }>(service, 'GET', `/users/${max}`);
    expect(found.status).toBe(200);
    expect(found.body.id).toBe(max);
    const credit = await admin(service, 'POST', `/users/${max}/adjustments`, {
      amount: '2',
      reason: 'goodwill',
    });
    expect(credit.status).toBe(201);
    const balance = await admin<{ available: string }>(service, 'GET', `/users/${max}/balance`);
    expect(balance.body.available).toBe('2');
  });
});

describe('suspension', () => {
  test("stops the user's keys and sessions at once, and reinstating brings them back", async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 6101, balance: '1' });
    const { token } = await devSignIn(service, 6101);
    // Warm the key cache: suspension must reach it by NOTIFY.
    expect((await call(service, 'GET', '/v1/models', { token: apiKey })).status).toBe(200);
    expect((await call(service, 'GET', '/api/me', { token: apiKey })).status).toBe(200);

    const missingReason = await admin(service, 'POST', `/users/${userId}/suspend`, {});
    expect(missingReason.status).toBe(400);
    expectErrorShape(missingReason.body, 'invalid_request');

    const suspended = await admin<Record<string, unknown>>(
      service,
      'POST',
      `/users/${userId}/suspend`,
      {
        reason: 'chargeback investigation',
      },
    );
    expect(suspended.status).toBe(200);
    expect(suspended.body).toMatchObject({
      id: userId,
      status: 'suspended',
      suspensionReason: 'chargeback investigation',
      changed: true,
    });
    await expect
      .poll(async () => (await call(service, 'GET', '/v1/models', { token: apiKey })).status, {
        timeout: 20_000,
      })
      .toBe(403);
    for (const credential of [apiKey, token]) {
      for (const route of ['/api/me', '/api/me/balance', '/api/me/keys']) {
        const result = await call(service, 'GET', route, { token: credential });
        expect(result.status).toBe(403);
        expectErrorShape(result.body, 'account_suspended');
      }
    }
    const again = await admin<{ changed: boolean }>(service, 'POST', `/users/${userId}/suspend`, {
      reason: 'twice',
    });
    expect(again.body.changed).toBe(false);

    const reinstated = await admin<Record<string, unknown>>(
      service,
      'POST',
      `/users/${userId}/unsuspend`,
      {
        reason: 'resolved',
      },
    );
    expect(reinstated.body).toMatchObject({ status: 'active', suspendedAt: null, changed: true });
    expect((await call(service, 'GET', '/api/me', { token })).status).toBe(200);
    expect((await call(service, 'GET', '/v1/models', { token: apiKey })).status).toBe(200);
  });

  test('honours Idempotency-Key like every admin POST', async () => {
    const { userId } = await userWithKey(service, { telegramId: 6102 });
    const send = () =>
      fetch(`${service.url}/admin/users/${userId}/suspend`, {
        method: 'POST',
        headers: {
          authorization: 'Bearer test-admin-token-0123456789',
          'content-type': 'application/json',
          'idempotency-key': 'suspend-6102',
        },
        body: JSON.stringify({ reason: 'abuse' }),
      });
    const first = await send();
    const second = await send();
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(await second.json()).toEqual(await first.json());
    const log = await admin<AuditPage>(
      service,
      'GET',
      `/audit-log?target=user:${userId}&action=user.suspend`,
    );
    expect(log.body.data).toHaveLength(1);
  });
});

describe('revoking a key', () => {
  test("stops that key at once and leaves the user's other keys and sessions working", async () => {
    const { userId, keyId, apiKey } = await userWithKey(service, {
      telegramId: 6301,
      balance: '1',
    });
    const other = await admin<{ id: string; key: string }>(
      service,
      'POST',
      `/users/${userId}/keys`,
      {},
    );
    const { token } = await devSignIn(service, 6301);
    // Warm the key cache: the revocation must reach it by NOTIFY.
    expect((await call(service, 'GET', '/v1/models', { token: apiKey })).status).toBe(200);

    const revoked = await admin<{ id: string; revokedAt: string }>(
      service,
      'DELETE',
      `/users/${userId}/keys/${keyId}`,
    );
    expect(revoked.status).toBe(200);
    expect(revoked.body).toEqual({
      id: keyId,
      revokedAt: expect.any(String),
      alreadyRevoked: false,
    });
    await expect
      .poll(async () => (await call(service, 'GET', '/v1/models', { token: apiKey })).status, {
        timeout: 20_000,
      })
      .toBe(401);
    expect((await call(service, 'GET', '/v1/models', { token: other.body.key })).status).toBe(200);
    expect((await call(service, 'GET', '/api/me', { token })).status).toBe(200);

    // Again: the first time, nothing new (no second audit entry).
    const again = await admin<{ revokedAt: string }>(
      service,
      'DELETE',
      `/users/${userId}/keys/${keyId}`,
    );
    expect(again.body).toEqual({ ...revoked.body, alreadyRevoked: true });

    // The listing the CLI's `keys list` prints too.
    const listed = await admin<{ data: Array<{ id: string; revokedAt: string | null }> }>(
      service,
      'GET',
      `/users/${userId}/keys`,
    );
    expect(listed.status).toBe(200);
    expect(listed.body.data.map((k) => [k.id, k.revokedAt])).toEqual([
      [other.body.id, null],
      [keyId, revoked.body.revokedAt],
    ]);
    expect(JSON.stringify(listed.body)).not.toMatch(/[0-9a-f]{64}|lx-[A-Za-z0-9_-]{43}/);

    // Another user's key, or no key at all, through this user's path: 404, nothing revoked.
    const stranger = await userWithKey(service, { telegramId: 6302 });
    const before = await rowCounts(database.pool);
    for (const path of [
      `/users/${userId}/keys/${stranger.keyId}`,
      `/users/${userId}/keys/nope`,
      // 36 characters of [0-9a-f-] that are not a uuid
      `/users/${userId}/keys/${'-'.repeat(36)}`,
      `/users/${userId}/keys/${'0'.repeat(36)}`,
      `/users/${userId}/keys/0123456789abcdef-0123456789abcdef-01`,
    ]) {
      const refused = await admin(service, 'DELETE', path);
      expect({ path, status: refused.status }).toEqual({ path, status: 404 });
      expectErrorShape(refused.body, 'key_not_found');
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect((await call(service, 'GET', '/v1/models', { token: stranger.apiKey })).status).toBe(200);

    const log = await admin<{ data: Array<{ action: string; target: string; details: object }> }>(
      service,
      'GET',
      `/audit-log?target=user:${userId}&action=key.revoke`,
    );
    expect(log.body.data).toHaveLength(1);
    expect(log.body.data[0]).toMatchObject({ actor: 'admin', details: { keyId } });
  });
});

describe('the audit log', () => {
  test('records every admin action with who, what, when, from where; pages newest first', async () => {
    const { userId } = await userWithKey(service, { telegramId: 6201, balance: '2' });
    await admin(service, 'POST', `/users/${userId}/suspend`, { reason: 'check' });
    await admin(service, 'GET', `/users/${userId}`);
    await admin(service, 'GET', `/users/${userId}/balance`);
    const page = await admin<AuditPage>(service, 'GET', `/audit-log?target=user:${userId}`);
    expect(page.status).toBe(200);
    expect(page.body.data.map((e) => e.action)).toEqual([
      'balance.read',
      'user.read',
      'user.suspend',
      'key.create',
      'balance.adjust',
      'user.create',
    ]);
    for (const entry of page.body.data) {
      expect(entry.actor).toBe('admin');
      expect(entry.ip).toMatch(/127\.0\.0\.1/);
      expect(entry.requestId).toMatch(/^req_/);
      expect(Date.now() - Date.parse(entry.at)).toBeLessThan(60_000);
    }
    expect(page.body.data[2]!.details).toMatchObject({ reason: 'check' });

    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const next: { body: AuditPage } = await admin<AuditPage>(
        service,
        'GET',
        `/audit-log?limit=2&target=user:${userId}${cursor ? `&cursor=${cursor}` : ''}`,
      );
      ids.push(...next.body.data.map((e) => e.id));
      cursor = next.body.nextCursor;
    } while (cursor);
    expect(ids).toEqual(page.body.data.map((e) => e.id));

    const reads = await admin<AuditPage>(service, 'GET', '/audit-log?action=audit_log.read');
    expect(reads.body.data.length).toBeGreaterThan(0);
    for (const bad of ['limit=0', 'limit=1001', 'cursor=abc']) {
      const result = await admin(service, 'GET', `/audit-log?${bad}`);
      expect(result.status).toBe(400);
      expectErrorShape(result.body, 'invalid_request');
    }
  });

  test('the database refuses to change or delete an audit entry', async () => {
    await expect(database.pool.query(`update audit_log set actor = 'nobody'`)).rejects.toThrow(
      /append-only/,
    );
    await expect(database.pool.query(`delete from audit_log`)).rejects.toThrow(/append-only/);
    await expect(database.pool.query(`truncate audit_log`)).rejects.toThrow(/append-only/);
  });
});
