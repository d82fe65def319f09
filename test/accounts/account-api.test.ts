import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { exportAccount } from '../../src/account/exportAccount.js';
import { cliActor } from '../../src/cli/context.js';
import { runCli } from '../../src/cli/main.js';
import { createApiKey } from '../../src/keys/apiKeys.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import {
  ADMIN_TOKEN,
  admin,
  startTestService,
  userWithKey,
  type TestService,
} from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig, sdk } from '../gateway/fixtures.js';
import { call, devSignIn, expectErrorShape, rowCounts } from './support.js';

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let session: { token: string; userId: string };
let apiKey: string;

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  service = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, { telegram: { devSignIn: true } }),
  });
  ({ apiKey } = await userWithKey(service, { telegramId: 7001, balance: '10' }));
  session = await devSignIn(service, 7001, 'grace');
  const client = sdk(service.url, apiKey);
  for (const [model, tokens] of [
    ['gpt-4o-mini', 5],
    ['precise', 7],
    ['gpt-4o-mini', 3],
  ] as const) {
    await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: `hello [[tokens=${tokens}]]` }],
    });
  }
  await client.embeddings.create({ model: 'text-embedding-3-small', input: 'embed me' });
  await service.http.services.work.drain(5000);
});
afterAll(async () => {
  await service?.stop();
  await stub?.close();
  await database?.drop();
});

interface UsagePage {
  data: Array<
    Record<string, unknown> & { id: string; model: string; costUsd: string; startedAt: string }
  >;
  nextCursor: string | null;
}

/** A cursor as the API encodes one, with a time of our choosing. */
function forgedCursor(startedAt: string): string {
  return Buffer.from(JSON.stringify([startedAt, '1']), 'utf8').toString('base64url');
}

describe('GET /api/me and /api/me/balance', () => {
  test('an API key and a session of the same user see the same account', async () => {
    const byKey = await call<Record<string, unknown>>(service, 'GET', '/api/me', { token: apiKey });
    const bySession = await call<Record<string, unknown>>(service, 'GET', '/api/me', {
      token: session.token,
    });
    expect(byKey.status).toBe(200);
    expect(byKey.body['id']).toBe(session.userId);
    expect(byKey.body['auth']).toMatchObject({ via: 'api_key' });
    expect(bySession.body['auth']).toMatchObject({ via: 'session' });
    const balance = await call<Record<string, string>>(service, 'GET', '/api/me/balance', {
      token: session.token,
    });
    expect(balance.body).toEqual(byKey.body['balance']);
    expect(Object.keys(balance.body).sort()).toEqual(['available', 'currency', 'held', 'posted']);
    const adminView = await admin(service, 'GET', `/users/${session.userId}/balance`);
    expect(balance.body).toEqual(adminView.body);
    expect(new Decimal(balance.body['posted']!).lt(10)).toBe(true);
  });
});

describe('GET /api/me/usage', () => {
  test('newest first, cursor-paginated, never a prompt', async () => {
    const all = await call<UsagePage>(service, 'GET', '/api/me/usage', { token: session.token });
    expect(all.status).toBe(200);
    expect(all.body.data).toHaveLength(4);
    expect(all.body.nextCursor).toBeNull();
    expect(JSON.stringify(all.body)).not.toContain('hello');
    expect(JSON.stringify(all.body)).not.toContain('embed me');
    const started = all.body.data.map((row) => row.startedAt);
    expect([...started].sort().reverse()).toEqual(started);
    expect(all.body.data[0]!.model).toBe('text-embedding-3-small');

    const pages: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: UsagePage } = await call<UsagePage>(
        service,
        'GET',
        `/api/me/usage?limit=1${cursor ? `&cursor=${cursor}` : ''}`,
        { token: session.token },
      );
      pages.push(...page.body.data.map((row) => row.id));
      cursor = page.body.nextCursor;
    } while (cursor && pages.length < 10);
    expect(pages).toEqual(all.body.data.map((row) => row.id));

    const mini = await call<UsagePage>(service, 'GET', '/api/me/usage?model=gpt-4o-mini', {
      token: apiKey,
    });
    expect(mini.body.data.map((row) => row.model)).toEqual(['gpt-4o-mini', 'gpt-4o-mini']);
    const future = await call<UsagePage>(service, 'GET', '/api/me/usage?from=2999-01-01', {
      token: apiKey,
    });
    expect(future.body.data).toEqual([]);
    const past = await call<UsagePage>(service, 'GET', '/api/me/usage?to=2000-01-01T00:00:00Z', {
      token: apiKey,
    });
    expect(past.body.data).toEqual([]);
  });

  test('bad parameters are 400s naming the parameter', async () => {
    for (const [query, param] of [
      ['limit=0', 'limit'],
      ['limit=501', 'limit'],
      ['limit=abc', 'limit'],
      ['from=yesterday', 'from'],
      ['from=2026-02-01&to=2026-01-01', 'from'],
      ['cursor=not-a-cursor', 'cursor'],
      ['cursor=WyJ4IiwiMSJd', 'cursor'],
      // forged cursors of the right shape whose time is not on the clock or the calendar
      [`cursor=${forgedCursor('2026-13-45T99:99:99.000000Z')}`, 'cursor'],
      [`cursor=${forgedCursor('2026-01-01T24:00:00.000000Z')}`, 'cursor'],
      [`cursor=${forgedCursor('2026-02-30T10:00:00.000000Z')}`, 'cursor'],
      ['model=a%0d%0aSet-Cookie:%20x=1', 'model'],
      ['limit=1&limit=2', 'limit'],
    ] as const) {
      const result = await call<{ error: { param: string } }>(
        service,
        'GET',
        `/api/me/usage?${query}`,
        { token: apiKey },
      );
      expect(result.status, query).toBe(400);
      expectErrorShape(result.body, 'invalid_request');
      expect(result.body.error.param).toBe(param);
    }
  });
});

describe('GET /api/me/statement', () => {
  test('ledger lines with running balance, opening and closing balances', async () => {
    const result = await call<{
      account: string;
      openingBalance: string;
      closingBalance: string;
      totalIn: string;
      totalOut: string;
      lineCount: number;
      lines: Array<{ amount: string; runningBalance: string; kind: string }>;
      nextCursor: string | null;
    }>(service, 'GET', '/api/me/statement', { token: session.token });
    expect(result.status).toBe(200);
    const statement = result.body;
    expect(statement.account).toBe(`liabilities:customers:${session.userId}`);
    expect(statement.openingBalance).toBe('0');
    expect(statement.lines.map((l) => l.kind)).toEqual([
      'adjustment',
      'usage',
      'usage',
      'usage',
      'usage',
    ]);
    expect(statement.lines[0]).toMatchObject({ amount: '10', runningBalance: '10' });
    let running = new Decimal(statement.openingBalance);
    for (const line of statement.lines) {
      running = running.add(line.amount);
      expect(line.runningBalance).toBe(running.toString());
    }
    const balance = await call<{ posted: string }>(service, 'GET', '/api/me/balance', {
      token: session.token,
    });
    expect(statement.closingBalance).toBe(balance.body.posted);
    expect(new Decimal(statement.totalIn).sub(statement.totalOut).toString()).toBe(
      statement.closingBalance,
    );

    // Pages of two lines give the same lines.
    const first = await call<typeof statement>(service, 'GET', '/api/me/statement?limit=2', {
      token: session.token,
    });
    expect(first.body.lines).toEqual(statement.lines.slice(0, 2));
    const second = await call<typeof statement>(
      service,
      'GET',
      `/api/me/statement?limit=2&cursor=${first.body.nextCursor}`,
      { token: session.token },
    );
    expect(second.body.lines).toEqual(statement.lines.slice(2, 4));
    expect(second.body.closingBalance).toBe(statement.closingBalance);

    const empty = await call<typeof statement>(
      service,
      'GET',
      '/api/me/statement?from=2999-01-01',
      { token: session.token },
    );
    expect(empty.body).toMatchObject({
      lines: [],
      lineCount: 0,
      openingBalance: statement.closingBalance,
      closingBalance: statement.closingBalance,
    });
  });

  test('CSV: the exports statement of the same lines, deterministic bytes', async () => {
    const json = await call<{
      lines: Array<{ entryId: string; kind: string; amount: string; runningBalance: string }>;
    }>(service, 'GET', '/api/me/statement', { token: session.token });
    const csv = await call(service, 'GET', '/api/me/statement?format=csv', { token: apiKey });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const rows = csv.text.trimEnd().split('\n');
    expect(rows[0]).toBe(
      'timestamp,entry_id,kind,description,amount,balance,currency,rate,rate_source,chain_ref',
    );
    expect(rows).toHaveLength(json.body.lines.length + 1);
    rows.slice(1).forEach((row, i) => {
      const cells = row.split(',');
      const line = json.body.lines[i]!;
      expect(cells[1]).toBe(line.entryId);
      expect(cells[2]).toBe(line.kind);
      expect(cells[4]).toBe(line.amount);
      expect(cells[5]).toBe(line.runningBalance);
      expect(cells[6]).toBe('USD');
    });
    const again = await call(service, 'GET', '/api/me/statement?format=csv', { token: apiKey });
    expect(again.text).toBe(csv.text);
    const none = await call(service, 'GET', '/api/me/statement?format=csv&from=2999-01-01', {
      token: apiKey,
    });
    expect(none.text.trimEnd().split('\n')).toEqual([rows[0]]);
    const bad = await call(service, 'GET', '/api/me/statement?format=xml', { token: apiKey });
    expect(bad.status).toBe(400);
    expectErrorShape(bad.body, 'invalid_request');
  });
});

describe('GET /api/me/statement while money moves', () => {
  test('the lines, the line count and the closing balance of one answer agree', async () => {
    const { userId } = await userWithKey(service, { telegramId: 7102, balance: '1' });
    const { token } = await devSignIn(service, 7102);
    let writing = true;
    const writer = (async () => {
      for (let n = 0; writing; n += 1)
        await admin(service, 'POST', `/users/${userId}/adjustments`, {
          amount: '0.01',
          reason: `top-up ${n}`,
        });
    })();
    const mismatches: string[] = [];
    try {
      // Each answer is read while credits are booked; without one snapshot, about one in ten
      // counted the lines before a credit and listed them after it.
      for (let i = 0; i < 100 && mismatches.length === 0; i += 1) {
        const { body } = await call<{
          lineCount: number;
          closingBalance: string;
          totalIn: string;
          lines: Array<{ runningBalance: string }>;
        }>(service, 'GET', '/api/me/statement', { token });
        const last = body.lines.at(-1)!.runningBalance;
        if (
          body.lines.length !== body.lineCount ||
          last !== body.closingBalance ||
          body.totalIn !== body.closingBalance
        )
          mismatches.push(
            `${body.lines.length} lines, lineCount ${body.lineCount}, last ${last}, closing ${body.closingBalance}, in ${body.totalIn}`,
          );
      }
    } finally {
      writing = false;
      await writer;
    }
    expect(mismatches).toEqual([]);
  });
});

describe('GET /api/me/deposits', () => {
  test('a parameter given twice is a 400 naming it, as on /api/me/usage', async () => {
    for (const [query, param] of [
      ['cursor=9&cursor=1', 'cursor'],
      ['network=ethereum&network=tron', 'network'],
      ['limit=1&limit=2', 'limit'],
    ] as const) {
      const result = await call<{ error: { param: string } }>(
        service,
        'GET',
        `/api/me/deposits?${query}`,
        { token: session.token },
      );
      expect({ query, status: result.status }).toEqual({ query, status: 400 });
      expectErrorShape(result.body, 'invalid_request');
      expect(result.body.error.param).toBe(param);
    }
  });
});

describe('times in from and to', () => {
  test('a date that is not on the calendar is a 400, not a day of the next month', async () => {
    for (const path of ['/api/me/usage', '/api/me/statement', '/api/me/statement?format=csv']) {
      for (const [query, param] of [
        ['from=2026-02-30', 'from'],
        ['to=2027-02-29', 'to'],
        ['from=2026-04-31T10:00:00Z', 'from'],
        ['from=2026-01-01T24:00:00Z', 'from'],
        ['to=2026-01-01T10:00:00%2B14:30', 'to'],
      ] as const) {
        const url = `${path}${path.includes('?') ? '&' : '?'}${query}`;
        const result = await call<{ error: { param: string } }>(service, 'GET', url, {
          token: session.token,
        });
        expect({ url, status: result.status }).toEqual({ url, status: 400 });
        expectErrorShape(result.body, 'invalid_request');
        expect(result.body.error.param).toBe(param);
      }
    }
    // The last day of a leap February and the widest zones are fine.
    for (const query of ['from=2028-02-29', 'to=2026-12-31T23:59:59.5%2B14:00']) {
      const result = await call(service, 'GET', `/api/me/usage?${query}`, {
        token: session.token,
      });
      expect({ query, status: result.status }).toEqual({ query, status: 200 });
    }
  });
});

describe('/api/me/keys', () => {
  test('create (secret shown once), list without secrets, revoke (stops working at once)', async () => {
    const created = await call<{ id: string; key: string; name: string }>(
      service,
      'POST',
      '/api/me/keys',
      { token: session.token, body: { name: 'laptop' } },
    );
    expect(created.status).toBe(201);
    expect(created.body.key).toMatch(/^lx-/);
    const list = await call<{ data: Array<Record<string, unknown>> }>(
      service,
      'GET',
      '/api/me/keys',
      {
        token: session.token,
      },
    );
    expect(list.body.data.map((k) => k['id'])).toContain(created.body.id);
    expect(JSON.stringify(list.body)).not.toContain(created.body.key);
    expect(JSON.stringify(list.body)).not.toMatch(/[0-9a-f]{64}/);

    const models = await sdk(service.url, created.body.key).models.list();
    expect(models.data.length).toBeGreaterThan(0);

    const revoked = await call<{ id: string; revokedAt: string }>(
      service,
      'DELETE',
      `/api/me/keys/${created.body.id}`,
      { token: session.token },
    );
    expect(revoked.status).toBe(200);
    expect(revoked.body.id).toBe(created.body.id);
    const after = await call(service, 'GET', '/api/me', { token: created.body.key });
    expect(after.status).toBe(401);
    expectErrorShape(after.body, 'invalid_api_key');
    const v1 = await call(service, 'GET', '/v1/models', { token: created.body.key });
    expect(v1.status).toBe(401);
  });

  test('at most 100 active keys, even when many are created at once: the rest are 409 too_many_keys', async () => {
    const user = await devSignIn(service, 7090, 'keyring');
    for (let i = 0; i < 95; i += 1)
      await createApiKey(service.http.services.runtime.database.db, {
        userId: user.userId,
        name: `k${i}`,
      });
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        call<{ key?: string }>(service, 'POST', '/api/me/keys', {
          token: user.token,
          body: { name: `burst ${i}` },
        }),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([...Array(5).fill(201), ...Array(7).fill(409)]);
    for (const refused of results.filter((r) => r.status === 409))
      expectErrorShape(refused.body, 'too_many_keys');
    const { rows } = await database.pool.query<{ n: number }>(
      `select count(*)::int as n from api_keys where user_id = $1 and revoked_at is null`,
      [user.userId],
    );
    expect(rows[0]!.n).toBe(100);
  });

  test('revoking a key id that is not a uuid is a 404 key_not_found; nothing is revoked', async () => {
    const before = await rowCounts(database.pool);
    for (const id of [
      '-'.repeat(36),
      '0'.repeat(36),
      '0123456789abcdef-0123456789abcdef-01',
      'nope',
    ]) {
      const result = await call(service, 'DELETE', `/api/me/keys/${id}`, {
        token: session.token,
      });
      expect({ id, status: result.status }).toEqual({ id, status: 404 });
      expectErrorShape(result.body, 'key_not_found');
    }
    expect(await rowCounts(database.pool)).toEqual(before);
  });

  test('Idempotency-Key: a repeated create makes one key and does not show the secret again', async () => {
    const headers = { 'idempotency-key': 'create-ci-key' };
    const first = await call<{ id: string; key: string }>(service, 'POST', '/api/me/keys', {
      token: session.token,
      body: { name: 'ci' },
      headers,
    });
    const second = await call<{ id: string; key: string | null }>(service, 'POST', '/api/me/keys', {
      token: session.token,
      body: { name: 'ci' },
      headers,
    });
    expect(second.body.id).toBe(first.body.id);
    expect(second.body.key).toBeNull();
    expect(second.headers.get('idempotent-replayed')).toBe('true');
  });

  test('a key creation and its replay both answer cache-control: no-store (account and admin API)', async () => {
    const created = [];
    for (const [path, token] of [
      ['/api/me/keys', session.token],
      [`/admin/users/${session.userId}/keys`, 'test-admin-token-0123456789'],
    ] as const) {
      const send = () =>
        call<{ id: string; key: string | null }>(service, 'POST', path, {
          token,
          body: { name: 'no-store' },
          headers: { 'idempotency-key': `no-store-${path}` },
        });
      const first = await send();
      const replay = await send();
      created.push({
        path,
        first: [first.status, first.headers.get('cache-control')],
        replay: [
          replay.status,
          replay.headers.get('idempotent-replayed'),
          replay.headers.get('cache-control'),
        ],
        sameKey: replay.body.id === first.body.id,
      });
    }
    expect(created).toEqual([
      {
        path: '/api/me/keys',
        first: [201, 'no-store'],
        replay: [201, 'true', 'no-store'],
        sameKey: true,
      },
      {
        path: `/admin/users/${session.userId}/keys`,
        first: [201, 'no-store'],
        replay: [201, 'true', 'no-store'],
        sameKey: true,
      },
    ]);
  });

  test('a key with a spend limit cannot mint keys, revoke keys or erase the account', async () => {
    const limited = await call<{ id: string; key: string }>(service, 'POST', '/api/me/keys', {
      token: session.token,
      body: { name: 'limited', spendLimitUsd: '1' },
    });
    const before = await database.pool.query('select count(*)::int as n from api_keys');
    for (const [method, path, body] of [
      ['POST', '/api/me/keys', { name: 'escape' }],
      ['DELETE', `/api/me/keys/${limited.body.id}`, undefined],
      ['DELETE', '/api/me', { confirm: 'erase my account' }],
    ] as const) {
      const result = await call(service, method, path, {
        token: limited.body.key,
        ...(body ? { body } : {}),
      });
      expect(result.status).toBe(403);
      expectErrorShape(result.body, 'key_restricted');
    }
    const after = await database.pool.query('select count(*)::int as n from api_keys');
    expect(after.rows[0].n).toBe(before.rows[0].n);
    // It may still read the account.
    expect((await call(service, 'GET', '/api/me/usage', { token: limited.body.key })).status).toBe(
      200,
    );
  });
});

describe('a method a route does not take', () => {
  test('is a 405 in the error shape, with the methods it does take in Allow', async () => {
    for (const [method, path] of [
      ['PUT', '/api/me/keys'],
      ['POST', '/api/me/usage'],
      ['PATCH', '/api/me'],
    ] as const) {
      const result = await call(service, method, path, { token: session.token, body: {} });
      expect({ method, path, status: result.status }).toEqual({ method, path, status: 405 });
      expect(result.headers.get('content-type')).toMatch(/json/);
      expectErrorShape(result.body, 'method_not_allowed');
      expect(result.headers.get('allow')).toMatch(/GET/);
    }
  });
});

describe('GET /api/me/export', () => {
  test('everything held about the user, in one JSON document, without secrets or hashes', async () => {
    const result = await call<Record<string, unknown>>(service, 'GET', '/api/me/export', {
      token: session.token,
    });
    expect(result.status).toBe(200);
    expect(result.headers.get('content-disposition')).toMatch(/attachment/);
    const document = result.body as {
      format: string;
      profile: { id: string; telegramId: string };
      balance: unknown;
      keys: unknown[];
      sessions: unknown[];
      ledger: { lines: unknown[]; closingBalance: string };
      usage: Array<{ clientIp: string | null }>;
      usageDaily: unknown[];
      auditLog: Array<{ action: string }>;
      other: Record<string, unknown>;
    };
    expect(document.format).toBe('lingxi-account-export/1');
    expect(document.profile).toMatchObject({ id: session.userId, telegramId: '7001' });
    expect(document.keys.length).toBeGreaterThanOrEqual(1);
    expect(document.sessions.length).toBeGreaterThanOrEqual(1);
    expect(document.ledger.lines).toHaveLength(5);
    expect(document.usage).toHaveLength(4);
    expect(document.usage[0]!.clientIp).toMatch(/127\.0\.0\.1/);
    expect(document.auditLog.map((e) => e.action)).toEqual(
      expect.arrayContaining(['user.create', 'key.create', 'balance.adjust']),
    );
    const text = result.text;
    expect(text).not.toContain(session.token);
    expect(text).not.toContain(apiKey);
    expect(text).not.toMatch(/key_hash|token_hash|keyHash|tokenHash/);
    const { rows } = await database.pool.query(
      `select key_hash from api_keys union all select token_hash from sessions`,
    );
    for (const { key_hash } of rows) expect(text).not.toContain(key_hash);
  });

  test("the operator's audit entries about the user say `admin`, without the admin's IP, request id or login name", async () => {
    // Behind a proxy the admin's address is the one X-Forwarded-For names: a known one.
    const proxied = await startTestService({
      databaseUrl: database.url,
      config: { http: { trustProxy: true }, telegram: { devSignIn: true } },
    });
    const adminIp = '198.51.100.77';
    try {
      const asAdmin = async (method: string, path: string, body: unknown) => {
        const result = await call<{ id: string }>(proxied, method, `/admin${path}`, {
          token: ADMIN_TOKEN,
          body,
          headers: { 'x-forwarded-for': adminIp },
        });
        expect(result.status).toBeLessThan(300);
        return result.body;
      };
      const { id: userId } = await asAdmin('POST', '/users', { telegramId: 7201 });
      await asAdmin('POST', `/users/${userId}/adjustments`, { amount: '4', reason: 'welcome' });
      await asAdmin('POST', `/users/${userId}/suspend`, { reason: 'checking a payment' });
      await asAdmin('POST', `/users/${userId}/unsuspend`, { reason: 'payment cleared' });
      const configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-export-')), 'lingxi.json');
      writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
      const cli = ['credit', '--user', userId, '--amount', '1', '--reason', 'goodwill'];
      expect(
        await runCli([...cli, '--config', configFile], { stdout: () => {}, stderr: () => {} }),
      ).toBe(0);
      const { token } = await devSignIn(proxied, 7201);
      const own = await call(proxied, 'POST', '/api/me/keys', { token, body: { name: 'mine' } });
      expect(own.status).toBe(201);

      // The admin's view of the log keeps who did it and from where.
      const log = await admin<{ data: Array<{ actor: string; ip: string | null }> }>(
        service,
        'GET',
        `/audit-log?target=user:${userId}`,
      );
      expect(log.body.data.filter((e) => e.ip === adminIp).length).toBeGreaterThanOrEqual(4);
      expect(log.body.data.map((e) => e.actor)).toContain(cliActor());

      const result = await call<{
        auditLog: Array<{
          action: string;
          actor: string;
          ip: string | null;
          requestId: string | null;
        }>;
      }>(service, 'GET', '/api/me/export', { token });
      expect(result.status).toBe(200);
      expect(result.text).not.toContain(adminIp);
      expect(result.text).not.toContain(cliActor());
      const entries = result.body.auditLog;
      expect(entries.map((e) => e.action)).toEqual(
        expect.arrayContaining([
          'user.create',
          'balance.adjust',
          'user.suspend',
          'user.unsuspend',
          'key.create',
        ]),
      );
      for (const entry of entries.filter((e) => e.action !== 'key.create'))
        expect(entry).toMatchObject({ actor: 'admin', ip: null, requestId: null });
      // The user's own entries stay as they are.
      expect(entries.find((e) => e.action === 'key.create')).toMatchObject({
        actor: `user:${userId}`,
        requestId: expect.any(String),
      });
    } finally {
      await proxied.stop();
    }
  });

  test('one view of the account: money booked while the export runs is in all of it or none', async () => {
    const { userId } = await userWithKey(service, { telegramId: 7101, balance: '3' });
    const { db } = service.runtime.database;
    const chunks = exportAccount(db, userId, new Date());
    // The profile and the balance are out; the ledger and the rest are still to be read.
    const parts = [(await chunks.next()).value as string];
    const credit = await admin(service, 'POST', `/users/${userId}/adjustments`, {
      amount: '2',
      reason: 'booked during the export',
    });
    expect(credit.status).toBe(201);
    for await (const part of chunks) parts.push(part);
    const document = JSON.parse(parts.join('')) as {
      balance: { posted: string };
      ledger: {
        lineCount: number;
        closingBalance: string;
        totalIn: string;
        lines: Array<{ runningBalance: string }>;
      };
      auditLog: Array<{ action: string }>;
    };
    expect(document.ledger.lines).toHaveLength(document.ledger.lineCount);
    expect(document.ledger.lines.at(-1)!.runningBalance).toBe(document.ledger.closingBalance);
    expect(document.balance.posted).toBe(document.ledger.closingBalance);
    expect(document.ledger.totalIn).toBe(document.ledger.closingBalance);
    expect(document.auditLog.filter((e) => e.action === 'balance.adjust')).toHaveLength(
      document.ledger.lineCount,
    );
  });
});
