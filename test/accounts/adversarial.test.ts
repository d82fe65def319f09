import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { admin, startTestService, userWithKey, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig, sdk } from '../gateway/fixtures.js';
import { call, devSignIn, expectErrorShape, rowCounts } from './support.js';

/**
 * A signed-in user, or their key, trying to reach what is not theirs or to escape a key's
 * limits through the account API: an Idempotency-Key another user chose, a forged usage
 * cursor naming another user's row, keys restricted by a model list only (an empty one
 * included) or by the smallest limit, and two gateway processes on one database.
 */

let database: TestDatabase;
let stub: UpstreamStub;
const services: TestService[] = [];

interface Person {
  userId: string;
  keyId: string;
  apiKey: string;
  token: string;
}
let alice: Person;
let bob: Person;

async function person(telegramId: number, username: string): Promise<Person> {
  const { userId, keyId, apiKey } = await userWithKey(services[0]!, { telegramId, balance: '5' });
  const { token } = await devSignIn(services[1]!, telegramId, username);
  await sdk(services[0]!.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `hi from ${username} [[tokens=2]]` }],
  });
  return { userId, keyId, apiKey, token };
}

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  const config = gatewayConfig(stub.url, { telegram: { devSignIn: true } });
  for (let i = 0; i < 2; i += 1)
    services.push(await startTestService({ databaseUrl: database.url, config }));
  alice = await person(9101, 'alice');
  bob = await person(9102, 'bob');
  await Promise.all(services.map((s) => s.http.services.work.drain(5000)));
});
afterAll(async () => {
  for (const service of services) await service.stop();
  await stub?.close();
  await database?.drop();
});

async function keyIdsOf(userId: string): Promise<string[]> {
  const { rows } = await database.pool.query<{ id: string }>(
    'select id from api_keys where user_id = $1 order by id',
    [userId],
  );
  return rows.map((r) => r.id);
}

describe('Idempotency-Key is the caller’s own', () => {
  test('another user sending the key and body Alice used gets a key of their own, never her answer', async () => {
    const headers = { 'idempotency-key': 'deploy-key-1' };
    const body = { name: 'deploy' };
    const first = await call<{ id: string; key: string }>(services[0]!, 'POST', '/api/me/keys', {
      token: alice.token,
      body,
      headers,
    });
    expect(first.status).toBe(201);
    const aliceKeys = await keyIdsOf(alice.userId);
    // Bob, on the other process, with the same key and body.
    const bobs = await call<{ id: string; key: string | null }>(
      services[1]!,
      'POST',
      '/api/me/keys',
      { token: bob.token, body, headers },
    );
    expect(bobs.status).toBe(201);
    expect(bobs.headers.get('idempotent-replayed')).toBeNull();
    expect(bobs.body.id).not.toBe(first.body.id);
    expect(bobs.body.key).toMatch(/^lx-/);
    expect(await keyIdsOf(bob.userId)).toContain(bobs.body.id);
    // Bob's key sending it again gets Bob's answer (his session and keys share his keys).
    const again = await call<{ id: string; key: string | null }>(
      services[0]!,
      'POST',
      '/api/me/keys',
      { token: bob.apiKey, body, headers },
    );
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toMatchObject({ id: bobs.body.id, key: null });
    // Another body under a key Alice used is no conflict for Bob: nothing tells him she used it.
    const second = await call(services[0]!, 'POST', '/api/me/keys', {
      token: alice.token,
      body,
      headers: { 'idempotency-key': 'deploy-key-2' },
    });
    expect(second.status).toBe(201);
    const aliceKeysNow = await keyIdsOf(alice.userId);
    const other = await call(services[1]!, 'POST', '/api/me/keys', {
      token: bob.token,
      body: { name: 'something else' },
      headers: { 'idempotency-key': 'deploy-key-2' },
    });
    expect(other.status).toBe(201);
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    expect(aliceKeysNow).toEqual([...aliceKeys, (second.body as { id: string }).id].sort());
    expect(await keyIdsOf(alice.userId)).toEqual(aliceKeysNow);
  });
});

describe('a forged usage cursor', () => {
  test('naming another user’s row and time shows only the caller’s own rows', async () => {
    const { rows } = await database.pool.query<{ id: string; started_at: Date }>(
      'select id::text, started_at from usage_records where user_id = $1',
      [bob.userId],
    );
    expect(rows.length).toBeGreaterThan(0);
    const bobRow = rows[0]!;
    // Just after Bob's row, so a cursor that ignored the user would start the page at it.
    const after = new Date(bobRow.started_at.getTime() + 1).toISOString();
    const cursor = Buffer.from(JSON.stringify([after, bobRow.id]), 'utf8').toString('base64url');
    for (const token of [alice.token, alice.apiKey]) {
      const page = await call<{ data: Array<{ id: string }> }>(
        services[0]!,
        'GET',
        `/api/me/usage?cursor=${cursor}&limit=500`,
        { token },
      );
      if (page.status === 200) {
        expect(page.body.data.map((r) => r.id)).not.toContain(bobRow.id);
        const { rows: mine } = await database.pool.query<{ id: string }>(
          'select id::text from usage_records where user_id = $1',
          [alice.userId],
        );
        for (const row of page.body.data) expect(mine.map((r) => r.id)).toContain(row.id);
      } else {
        expect(page.status).toBe(400);
      }
    }
  });
});

describe('a key restricted by a model list or a tiny limit', () => {
  test.each([
    ['a model list only', { allowedModels: ['gpt-4o-mini'] }],
    ['an empty model list', { allowedModels: [] }],
    ['the smallest spend limit', { spendLimitUsd: '0.000000000000000001' }],
  ])(
    '%s: cannot mint, revoke (itself or a sibling) or erase, by either process; it reads its account',
    async (_, limits) => {
      const restricted = await call<{ id: string; key: string }>(
        services[0]!,
        'POST',
        '/api/me/keys',
        { token: alice.token, body: { name: 'restricted', ...limits } },
      );
      expect(restricted.status).toBe(201);
      const before = await rowCounts(database.pool);
      for (const service of services) {
        for (const [method, path, body] of [
          ['POST', '/api/me/keys', { name: 'escape' }],
          ['POST', '/api/me/keys', { name: 'escape', spendLimitUsd: '1000' }],
          ['DELETE', `/api/me/keys/${restricted.body.id}`, undefined],
          ['DELETE', `/api/me/keys/${alice.keyId}`, undefined],
          ['DELETE', '/api/me', { confirm: 'erase my account' }],
        ] as const) {
          const result = await call(service, method, path, {
            token: restricted.body.key,
            ...(body ? { body } : {}),
          });
          expect({ method, path, status: result.status }).toEqual({ method, path, status: 403 });
          expectErrorShape(result.body, 'key_restricted');
        }
      }
      expect(await rowCounts(database.pool)).toEqual(before);
      const me = await call<{ id: string }>(services[1]!, 'GET', '/api/me', {
        token: restricted.body.key,
      });
      expect(me.status).toBe(200);
      expect(me.body.id).toBe(alice.userId);
    },
  );

  test('an Idempotency-Key its owner used to create a key: still 403 key_restricted, never that answer', async () => {
    const restricted = await call<{ id: string; key: string }>(
      services[0]!,
      'POST',
      '/api/me/keys',
      { token: alice.token, body: { name: 'limited', spendLimitUsd: '1' } },
    );
    const headers = { 'idempotency-key': 'owner-made-this' };
    const body = { name: 'unrestricted' };
    const made = await call<{ id: string }>(services[0]!, 'POST', '/api/me/keys', {
      token: alice.token,
      body,
      headers,
    });
    expect(made.status).toBe(201);
    for (const service of services) {
      const result = await call(service, 'POST', '/api/me/keys', {
        token: restricted.body.key,
        body,
        headers,
      });
      expect(result.status).toBe(403);
      expectErrorShape(result.body, 'key_restricted');
      expect(result.headers.get('idempotent-replayed')).toBeNull();
      expect(result.text).not.toContain(made.body.id);
    }
    // The owner's own retry still gets its answer.
    const retried = await call<{ id: string }>(services[1]!, 'POST', '/api/me/keys', {
      token: alice.token,
      body,
      headers,
    });
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    expect(retried.body.id).toBe(made.body.id);
  });

  test('an API key cannot sign out a session or reach the admin API', async () => {
    const before = await rowCounts(database.pool);
    const logout = await call(services[0]!, 'POST', '/api/auth/logout', { token: alice.apiKey });
    expect(logout.status).toBe(400);
    expectErrorShape(logout.body, 'not_a_session');
    for (const token of [alice.apiKey, alice.token]) {
      const listed = await call(services[1]!, 'GET', `/admin/users/${bob.userId}/keys`, { token });
      expect(listed.status).toBe(401);
      const revoked = await call(
        services[1]!,
        'DELETE',
        `/admin/users/${bob.userId}/keys/${bob.keyId}`,
        { token },
      );
      expect(revoked.status).toBe(401);
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect((await call(services[0]!, 'GET', '/api/me', { token: bob.apiKey })).status).toBe(200);
  });
});

describe('two processes', () => {
  test('Bob guessing Alice’s key id on one process cannot revoke it; Alice revoking it on the other stops it on both', async () => {
    const created = await call<{ id: string; key: string }>(services[0]!, 'POST', '/api/me/keys', {
      token: alice.token,
      body: { name: 'two-processes' },
    });
    // Both processes have it cached.
    for (const service of services)
      expect((await call(service, 'GET', '/api/me', { token: created.body.key })).status).toBe(200);
    for (const token of [bob.token, bob.apiKey]) {
      const refused = await call(services[1]!, 'DELETE', `/api/me/keys/${created.body.id}`, {
        token,
      });
      expect(refused.status).toBe(404);
      expectErrorShape(refused.body, 'key_not_found');
    }
    // The admin route naming Bob with Alice's key: no.
    const wrongUser = await admin(
      services[0]!,
      'DELETE',
      `/users/${bob.userId}/keys/${created.body.id}`,
    );
    expect(wrongUser.status).toBe(404);
    for (const service of services)
      expect((await call(service, 'GET', '/api/me', { token: created.body.key })).status).toBe(200);

    const revoked = await call<{ alreadyRevoked: boolean }>(
      services[1]!,
      'DELETE',
      `/api/me/keys/${created.body.id}`,
      { token: alice.token },
    );
    expect(revoked.status).toBe(200);
    expect(revoked.body.alreadyRevoked).toBe(false);
    expect((await call(services[1]!, 'GET', '/api/me', { token: created.body.key })).status).toBe(
      401,
    );
    await expect
      .poll(
        async () =>
          (await call(services[0]!, 'GET', '/api/me/keys', { token: created.body.key })).status,
        { timeout: 20_000, interval: 20 },
      )
      .toBe(401);
    const gateway = await sdk(services[0]!.url, created.body.key)
      .models.list()
      .catch((e: unknown) => e);
    expect((gateway as { status?: number }).status).toBe(401);
  });
});
