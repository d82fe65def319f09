import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import {
  admin,
  ADMIN_TOKEN,
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

interface Person {
  userId: string;
  keyId: string;
  apiKey: string;
  token: string;
  telegramId: number;
}
let alice: Person;
let bob: Person;

async function person(telegramId: number, username: string): Promise<Person> {
  const { userId, keyId, apiKey } = await userWithKey(service, { telegramId, balance: '5' });
  const { token } = await devSignIn(service, telegramId, username);
  await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: `hi from ${username} [[tokens=2]]` }],
  });
  return { userId, keyId, apiKey, token, telegramId };
}

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  service = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, {
      http: { bodyLimitBytes: 65_536 },
      telegram: { devSignIn: true },
    }),
  });
  alice = await person(8101, 'alice');
  bob = await person(8102, 'bob');
  await service.http.services.work.drain(5000);
});
afterAll(async () => {
  await service?.stop();
  await stub?.close();
  await database?.drop();
});

/** Everything a refused request must leave as it was. */
async function snapshot() {
  const balances = await database.pool.query(
    `select code, debits_posted::text, credits_posted::text, debits_pending::text, credits_pending::text
       from ledger_accounts order by code`,
  );
  return {
    rows: await rowCounts(database.pool),
    ledger: await ledgerRowCounts(database.pool),
    balances: balances.rows,
    audit: Number((await database.pool.query('select count(*) from audit_log')).rows[0].count),
  };
}

const READ_ROUTES = [
  '/api/me',
  '/api/me/balance',
  '/api/me/usage',
  '/api/me/statement',
  '/api/me/statement?format=csv',
  '/api/me/keys',
  '/api/me/export',
] as const;

describe('each user reaches only their own data', () => {
  test.each(READ_ROUTES)(
    'GET %s, by session and by key, even when naming the other user',
    async (route) => {
      for (const who of [alice, bob]) {
        const other = who === alice ? bob : alice;
        for (const token of [who.token, who.apiKey]) {
          const sep = route.includes('?') ? '&' : '?';
          const result = await call(
            service,
            'GET',
            `${route}${sep}userId=${other.userId}&user_id=${other.userId}&id=${other.userId}`,
            { token, headers: { 'x-user-id': other.userId } },
          );
          expect(result.status).toBe(200);
          const text = result.text;
          expect(text).not.toContain(other.keyId);
          expect(text).not.toContain(`customers:${other.userId}`);
          expect(text).not.toContain(String(other.telegramId));
          expect(text).not.toContain(other === alice ? 'alice' : 'bob');
          if (route === '/api/me') expect((result.body as { id: string }).id).toBe(who.userId);
        }
      }
    },
  );

  test("another user's key id is a 404 and the key keeps working", async () => {
    const before = await snapshot();
    for (const token of [alice.token, alice.apiKey]) {
      const result = await call(service, 'DELETE', `/api/me/keys/${bob.keyId}`, { token });
      expect(result.status).toBe(404);
      expectErrorShape(result.body, 'key_not_found');
    }
    expect(await snapshot()).toEqual(before);
    expect((await call(service, 'GET', '/api/me', { token: bob.apiKey })).status).toBe(200);
    // Not a 404 for a missing key and a 403 for someone else's: the same answer for both.
    const missing = await call(
      service,
      'DELETE',
      '/api/me/keys/00000000-0000-7000-8000-000000000000',
      {
        token: alice.token,
      },
    );
    expect(missing.status).toBe(404);
    expectErrorShape(missing.body, 'key_not_found');
  });

  test('a userId in the body of a key creation is ignored: the key is for the caller', async () => {
    const created = await call<{ id: string }>(service, 'POST', '/api/me/keys', {
      token: alice.token,
      body: { name: 'mine', userId: bob.userId, user_id: bob.userId },
    });
    expect(created.status).toBe(201);
    const { rows } = await database.pool.query('select user_id from api_keys where id = $1', [
      created.body.id,
    ]);
    expect(rows[0].user_id).toBe(alice.userId);
  });
});

describe('credentials that must not work', () => {
  const ME_ROUTES: Array<[string, string, unknown]> = [
    ...READ_ROUTES.map((route): [string, string, unknown] => ['GET', route, undefined]),
    ['POST', '/api/me/keys', { name: 'x' }],
    ['DELETE', `/api/me/keys/00000000-0000-7000-8000-000000000000`, undefined],
    ['DELETE', '/api/me', { confirm: 'erase my account' }],
    ['POST', '/api/auth/logout', undefined],
  ];

  test.each([
    ['no Authorization header', undefined, 'missing_credentials'],
    ['an empty bearer', '', 'invalid_credentials'],
    ['another scheme', 'Basic YWxhZGRpbjpvcGVuc2VzYW1l', 'invalid_credentials'],
    ['a well-formed unknown key', `lx-${'B'.repeat(43)}`, 'invalid_api_key'],
    ['a well-formed unknown session', `lxs-${'B'.repeat(43)}`, 'invalid_session'],
    ['the admin token', ADMIN_TOKEN, 'invalid_api_key'],
    ['SQL in the token', "lx-' or 1=1; drop table users; --", 'invalid_credentials'],
    ['SQL in the token, no spaces', "lx-'/**/or/**/1=1;--", 'invalid_api_key'],
    ['a huge token', `lxs-${'x'.repeat(8000)}`, 'invalid_session'],
  ] as const)('%s: 401 on every /api/me route, nothing changed', async (_name, token, code) => {
    const before = await snapshot();
    for (const [method, route, body] of ME_ROUTES) {
      const result = await call(service, method, route, {
        ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }),
        ...(body === undefined ? {} : { body }),
      });
      expect(result.status, `${method} ${route}`).toBe(401);
      expectErrorShape(result.body, code);
    }
    expect(await snapshot()).toEqual(before);
  });

  test('a revoked key and an expired session stop working on every route', async () => {
    const temp = await person(8103, 'carol');
    await call(service, 'DELETE', `/api/me/keys/${temp.keyId}`, { token: temp.token });
    await database.pool.query(
      `update sessions set created_at = now() - interval '2 days', expires_at = now() - interval '1 day' where user_id = $1`,
      [temp.userId],
    );
    const before = await snapshot();
    for (const [token, code] of [
      [temp.apiKey, 'invalid_api_key'],
      [temp.token, 'session_expired'],
    ] as const) {
      for (const [method, route, body] of ME_ROUTES) {
        const result = await call(service, method, route, {
          token,
          ...(body === undefined ? {} : { body }),
        });
        expect(result.status, `${method} ${route}`).toBe(401);
        expectErrorShape(result.body, code);
      }
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe('admin routes', () => {
  const ADMIN_ROUTES: Array<[string, string, unknown]> = [
    ['GET', '/admin/users/1', undefined],
    ['GET', '/admin/users/1/keys', undefined],
    ['GET', '/admin/users?telegramId=8101', undefined],
    ['POST', '/admin/users/1/suspend', { reason: 'x' }],
    ['POST', '/admin/users/1/unsuspend', { reason: 'x' }],
    ['GET', '/admin/audit-log', undefined],
    ['POST', '/admin/users/1/adjustments', { amount: '100', reason: 'free money' }],
    ['POST', '/admin/users', { telegramId: 999 }],
  ];
  test.each([
    ['no token', undefined],
    ['a wrong token', 'wrong-admin-token-0123456789'],
    ["a user's session token", 'SESSION'],
    ["a user's API key", 'KEY'],
    ['the admin token with a suffix', `${ADMIN_TOKEN}x`],
  ] as const)('%s: 401 invalid_admin_token, nothing changed', async (_name, token) => {
    const before = await snapshot();
    const bearer = token === 'SESSION' ? alice.token : token === 'KEY' ? alice.apiKey : token;
    for (const [method, route, body] of ADMIN_ROUTES) {
      const result = await call(service, method, route, {
        ...(bearer === undefined ? {} : { token: bearer }),
        ...(body === undefined ? {} : { body }),
      });
      expect(result.status, `${method} ${route}`).toBe(401);
      expectErrorShape(result.body, 'invalid_admin_token');
    }
    expect(await snapshot()).toEqual(before);
  });
});

describe('answers that show a secret', () => {
  test('are never stored by a cache: cache-control no-store on every route that shows one', async () => {
    const shown: Array<[string, { status: number; headers: Headers; text: string }]> = [
      ['dev sign-in', await call(service, 'POST', '/api/auth/dev', { body: { telegramId: 8103 } })],
      [
        'POST /api/me/keys',
        await call(service, 'POST', '/api/me/keys', { token: alice.token, body: {} }),
      ],
      [
        'POST /admin/users/:id/keys',
        await call(service, 'POST', `/admin/users/${bob.userId}/keys`, {
          token: ADMIN_TOKEN,
          body: {},
        }),
      ],
    ];
    for (const [route, result] of shown) {
      expect(result.status, route).toBeLessThan(300);
      expect(result.text, route).toMatch(/"(token|key)":"lxs?-/);
      expect(result.headers.get('cache-control'), route).toBe('no-store');
    }
  });
});

describe('injection strings', () => {
  const SQL = "'; drop table users; --";

  test('in query parameters and ids: 400 or 404 in the error shape, nothing changed', async () => {
    const before = await snapshot();
    const cases: Array<[string, string, number, string]> = [
      ['GET', `/api/me/usage?model=${encodeURIComponent(SQL)}`, 200, ''],
      ['GET', `/api/me/usage?from=${encodeURIComponent(SQL)}`, 400, 'invalid_request'],
      ['GET', `/api/me/usage?cursor=${encodeURIComponent(SQL)}`, 400, 'invalid_request'],
      ['GET', `/api/me/statement?cursor=${encodeURIComponent(SQL)}`, 400, 'invalid_request'],
      ['GET', `/api/me/statement?format=${encodeURIComponent(SQL)}`, 400, 'invalid_request'],
      ['GET', `/api/me/usage?model=${'m'.repeat(10_000)}`, 400, 'invalid_request'],
      ['DELETE', `/api/me/keys/${encodeURIComponent(SQL)}`, 404, 'key_not_found'],
      ['DELETE', `/api/me/keys/${encodeURIComponent("1' or '1'='1")}`, 404, 'key_not_found'],
    ];
    for (const [method, route, status, code] of cases) {
      const result = await call<{ data?: unknown[] }>(service, method, route, {
        token: alice.token,
      });
      expect(result.status, route).toBe(status);
      if (status === 200) expect(result.body.data).toEqual([]);
      else expectErrorShape(result.body, code);
    }
    for (const route of [
      `/admin/users?telegramId=${encodeURIComponent(SQL)}`,
      `/admin/users?username=${encodeURIComponent(SQL)}`,
      `/admin/users/${encodeURIComponent(SQL)}`,
      `/admin/audit-log?cursor=${encodeURIComponent(SQL)}`,
    ]) {
      const result = await admin(service, 'GET', route.replace('/admin', ''));
      expect([400, 404], route).toContain(result.status);
      expectErrorShape(result.body, result.status === 404 ? 'user_not_found' : 'invalid_request');
    }
    expect(await snapshot()).toEqual(before);
  });

  test('in bodies: refused with the error shape, nothing changed', async () => {
    const before = await snapshot();
    // 20000 levels of nesting, written out (JSON.stringify would recurse that deep).
    const deep = `${'['.repeat(20_000)}"x"${']'.repeat(20_000)}`;
    const deepObject = `${'{"confirm":'.repeat(5000)}"erase my account"${'}'.repeat(5000)}`;
    const cases: Array<[string, string, string | object, number, string]> = [
      ['POST', '/api/me/keys', { name: { $gt: '' } }, 400, 'invalid_request'],
      ['POST', '/api/me/keys', { name: 'n'.repeat(101) }, 400, 'invalid_request'],
      ['POST', '/api/me/keys', { name: 'x', spendLimitUsd: SQL }, 400, 'invalid_amount'],
      ['POST', '/api/me/keys', { name: 'x', spendLimitUsd: 1e308 }, 400, 'invalid_amount'],
      [
        'POST',
        '/api/me/keys',
        { name: 'x', allowedModels: [SQL, { a: 1 }] },
        400,
        'invalid_request',
      ],
      ['POST', '/api/me/keys', deep, 400, 'invalid_request'],
      ['POST', '/api/me/keys', 'null', 400, 'invalid_request'],
      ['POST', '/api/me/keys', '{"name": "x"', 400, 'invalid_request'],
      ['POST', '/api/me/keys', { name: 'x'.repeat(70_000) }, 413, 'request_too_large'],
      ['DELETE', '/api/me', { confirm: SQL }, 400, 'confirmation_required'],
      [
        'DELETE',
        '/api/me',
        { confirm: { confirm: 'erase my account' } },
        400,
        'confirmation_required',
      ],
      ['DELETE', '/api/me', { confirm: ['erase my account'] }, 400, 'confirmation_required'],
      ['DELETE', '/api/me', deep, 400, 'confirmation_required'],
      ['DELETE', '/api/me', deepObject, 400, 'confirmation_required'],
      ['DELETE', '/api/me', {}, 400, 'confirmation_required'],
    ];
    for (const [method, route, body, status, code] of cases) {
      const result = await call(service, method, route, { token: alice.token, body });
      expect(result.status, `${method} ${route} ${String(JSON.stringify(body)).slice(0, 60)}`).toBe(
        status,
      );
      expectErrorShape(result.body, code);
    }
    const adminCases: Array<[string, object, number, string]> = [
      [`/users/${bob.userId}/suspend`, { reason: { $ne: null } }, 400, 'invalid_request'],
      [`/users/${bob.userId}/suspend`, { reason: 'r'.repeat(501) }, 400, 'invalid_request'],

      [`/users/${encodeURIComponent(SQL)}/suspend`, { reason: 'x' }, 404, 'user_not_found'],
    ];
    for (const [route, body, status, code] of adminCases) {
      const result = await admin(service, 'POST', route, body);
      expect(result.status, route).toBe(status);
      expectErrorShape(result.body, code);
    }
    expect(await snapshot()).toEqual(before);
    // The tables are all still there.
    await database.pool.query('select 1 from users limit 1');
  });

  test('an injection string as a key name is stored as plain text', async () => {
    const created = await call<{ id: string; name: string }>(service, 'POST', '/api/me/keys', {
      token: alice.token,
      body: { name: SQL },
    });
    expect(created.status).toBe(201);
    expect(created.body.name).toBe(SQL);
    const { rows } = await database.pool.query('select name from api_keys where id = $1', [
      created.body.id,
    ]);
    expect(rows[0].name).toBe(SQL);
    expect(
      Number((await database.pool.query('select count(*) from users')).rows[0].count),
    ).toBeGreaterThan(1);
  });

  test('CRLF in a header cannot smuggle a second credential or a response header', async () => {
    const before = await snapshot();
    const url = new URL(service.url);
    const raw = [
      'GET /api/me HTTP/1.1',
      `Host: ${url.host}`,
      // What a client that fails to strip CRLF from a header value would send.
      `Authorization: Bearer lx-${'C'.repeat(43)}`,
      `Authorization: Bearer ${bob.token}`,
      'X-Request-Id: abcdefgh',
      'Set-Cookie: injected=1',
      'Connection: close',
      '',
      '',
    ].join('\r\n');
    const response = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname, () => socket.write(raw));
      let data = '';
      socket.on('data', (chunk) => (data += chunk.toString('utf8')));
      socket.on('end', () => resolve(data));
      socket.on('error', reject);
    });
    const [head, body] = response.split('\r\n\r\n') as [string, string];
    expect(head).toMatch(/^HTTP\/1\.1 401/);
    expect(head.toLowerCase()).not.toContain('set-cookie');
    expectErrorShape(JSON.parse(body), 'invalid_api_key');
    expect(await snapshot()).toEqual(before);
  });
});
