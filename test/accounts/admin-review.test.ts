import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hashIdempotentRequest } from '../../src/idempotency/idempotencyClaims.js';
import { canonicalJson } from '../../src/integrity/canonical.js';
import { KeyAuthenticator } from '../../src/keys/keyAuthenticator.js';
import { createLogger } from '../../src/log.js';
import { runLingxi } from '../support/cli.js';
import { startTcpProxy } from '../support/tcpProxy.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.js';
import { call, devSignIn, expectErrorShape, rowCounts } from './support.js';

/**
 * The admin API, the account API, the key cache and the CLI's tables against an attacker and an
 * unlucky operator: an Idempotency-Key given up by a failed request while another with the same
 * key reads it, the same key sent many times at once or on another route, amounts that are not
 * plain decimals, text PostgreSQL cannot store, the key cache's LISTEN session ended by the
 * server or dying without a word, and key names that would drive the operator's terminal.
 */

let database: TestDatabase;
let service: TestService;
let dir: string | undefined;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { http: { idempotencyLeaseMs: 1000 }, telegram: { devSignIn: true } },
  });
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function adminCall<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  return call<T>(service, method, `/admin${path}`, {
    token: ADMIN_TOKEN,
    headers,
    ...(body === undefined ? {} : { body }),
  });
}

async function newUser(telegramId: number): Promise<string> {
  const created = await adminCall<{ id: string }>('POST', '/users', { telegramId });
  expect(created.status, created.text).toBe(201);
  return created.body.id;
}

async function adjustmentEntries(userId: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: string }>(
    `select count(*)::text as n from ledger_entries
      where kind = 'adjustment' and metadata->>'userId' = $1`,
    [userId],
  );
  return Number(rows[0]!.n);
}

describe('an Idempotency-Key given up while another request with it looks it up', () => {
  test('the second request claims the freed key and does the work once (not a 500)', async () => {
    const userId = await newUser(930_001);
    const path = `/admin/users/${userId}/adjustments`;
    const body = { amount: '5', reason: 'goodwill' };
    const key = 'admin:released-under-it';
    // A claim left by a process that died an hour ago: the next request takes it over...
    await database.pool.query(
      `insert into http_idempotency (key, method, path, request_hash, status, response, created_at)
       values ($1, 'POST', $2, $3, null, null, now() - interval '1 hour')`,
      [key, path, hashIdempotentRequest('POST', path, canonicalJson(body))],
    );
    // ...unless another retry holds it first: that one takes it over, fails, and gives the key
    // up (releaseIdempotencyClaim deletes the unanswered claim), all while this request, which
    // found the key taken, is on its way to read the claim's answer.
    const other = await database.pool.connect();
    let retried: Promise<Awaited<ReturnType<typeof adminCall>>>;
    try {
      await other.query('begin');
      await other.query('select 1 from http_idempotency where key = $1 for update', [key]);
      retried = adminCall('POST', path.replace('/admin', ''), body, {
        'idempotency-key': 'released-under-it',
      });
      await until('the request waiting to take the claim over', async () => {
        const { rowCount } = await database.pool.query(
          `select 1 from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock'
              and query like '%http_idempotency%'`,
        );
        return rowCount === 1;
      });
      await other.query('delete from http_idempotency where key = $1', [key]);
      await other.query('commit');
    } finally {
      other.release();
    }
    const answer = await retried;
    expect(answer.status, answer.text).toBe(201);
    expect(answer.headers.get('idempotent-replayed')).toBeNull();
    expect(await adjustmentEntries(userId)).toBe(1);

    const replay = await adminCall('POST', path.replace('/admin', ''), body, {
      'idempotency-key': 'released-under-it',
    });
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body).toEqual(answer.body);
    expect(await adjustmentEntries(userId)).toBe(1);
  });
});

describe('the same Idempotency-Key sent many times at once', () => {
  test('creates one user and one key; every answer is that one, its replay or 409 in progress', async () => {
    const send = (path: string, body: unknown, key: string) =>
      Promise.all(
        Array.from({ length: 8 }, () =>
          adminCall<{ id: string }>('POST', path, body, { 'idempotency-key': key }),
        ),
      );
    const users = await send('/users', { telegramId: '930002' }, 'many-users');
    const created = users.filter((r) => r.status === 201);
    expect(created.length).toBeGreaterThanOrEqual(1);
    expect(new Set(created.map((r) => r.body.id)).size).toBe(1);
    for (const r of users.filter((r) => r.status !== 201)) {
      expect(r.status).toBe(409);
      expectErrorShape(r.body, 'idempotency_in_progress');
    }
    const userId = created[0]!.body.id;
    const { rows } = await database.pool.query(`select id from users where telegram_id = 930002`);
    expect(rows).toEqual([{ id: userId }]);

    const keys = await send(`/users/${userId}/keys`, { name: 'ci' }, 'many-keys');
    const made = keys.filter((r) => r.status === 201);
    expect(new Set(made.map((r) => r.body.id)).size).toBe(1);
    for (const r of keys.filter((r) => r.status !== 201)) expect(r.status).toBe(409);
    const stored = await database.pool.query('select id from api_keys where user_id = $1', [
      userId,
    ]);
    expect(stored.rows).toEqual([{ id: made[0]!.body.id }]);
  });
});

describe('one Idempotency-Key on another route or for another user', () => {
  test('is 409 idempotency_conflict and does nothing there; the first request still replays', async () => {
    const alice = await newUser(930_008);
    const bob = await newUser(930_009);
    const key = { 'idempotency-key': 'reused-by-a-script' };
    const body = { amount: '7', reason: 'refund' };
    const first = await adminCall<{ entryId: string }>(
      'POST',
      `/users/${alice}/adjustments`,
      body,
      key,
    );
    expect(first.status).toBe(201);
    const before = await rowCounts(database.pool);
    for (const [path, sent] of [
      [`/users/${bob}/adjustments`, body],
      [`/users/${alice}/keys`, {}],
      [`/users/${bob}/suspend`, { reason: 'x' }],
      ['/users', { telegramId: 930_010 }],
    ] as const) {
      const other = await adminCall('POST', path, sent, key);
      expect({ path, status: other.status }).toEqual({ path, status: 409 });
      expectErrorShape(other.body, 'idempotency_conflict');
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect(await adjustmentEntries(bob)).toBe(0);
    const again = await adminCall('POST', `/users/${alice}/adjustments`, body, key);
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toEqual(first.body);
  });
});

describe('POST /admin/users/:id/adjustments with amounts that are not plain decimals', () => {
  test('each is a 400 invalid_amount naming amount, and nothing is written', async () => {
    const userId = await newUser(930_003);
    const before = await rowCounts(database.pool);
    const amounts: unknown[] = [
      '1e3',
      '0x10',
      ' 5',
      '5 ',
      '5.',
      '.5',
      '+5',
      '-0',
      '0',
      '0.0000000000000000001', // 19 fractional digits; USD keeps 18
      `1${'0'.repeat(36)}`, // 10^36
      '1,000',
      '١٢', // Arabic-Indic digits
      'NaN',
      'Infinity',
      '',
      5,
      -0,
      null,
      ['5'],
      { value: '5' },
    ];
    for (const amount of amounts) {
      const result = await adminCall('POST', `/users/${userId}/adjustments`, {
        amount,
        reason: 'probe',
      });
      expect({ amount, status: result.status }).toEqual({ amount, status: 400 });
      expectErrorShape(result.body, 'invalid_amount');
      expect((result.body as { error: { param: string } }).error.param).toBe('amount');
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect(await adjustmentEntries(userId)).toBe(0);
  });
});

describe('text PostgreSQL cannot keep as sent', () => {
  const NUL = 'a\u0000b';
  const HALF_PAIR = 'a\ud800b';

  test('in a key name, a model id or a suspension reason: 400 naming the field, nothing written', async () => {
    const userId = await newUser(930_004);
    const { token } = await devSignIn(service, 930_005, 'carol');
    const before = await rowCounts(database.pool);
    const auditsBefore = (await database.pool.query('select count(*) from audit_log')).rows[0];
    const cases: Array<[string, string, Record<string, unknown>, string]> = [];
    for (const text of [NUL, HALF_PAIR]) {
      cases.push(
        ['admin', `/users/${userId}/keys`, { name: text }, 'name'],
        [
          'admin',
          `/users/${userId}/keys`,
          { allowedModels: ['gpt-4o-mini', text] },
          'allowedModels',
        ],
        ['admin', `/users/${userId}/suspend`, { reason: text }, 'reason'],
        ['admin', `/users/${userId}/unsuspend`, { reason: text }, 'reason'],
        ['me', '/api/me/keys', { name: text }, 'name'],
        ['me', '/api/me/keys', { allowedModels: [text] }, 'allowedModels'],
      );
    }
    for (const [who, path, body, param] of cases) {
      const result =
        who === 'admin'
          ? await adminCall('POST', path, body)
          : await call(service, 'POST', path, { token, body });
      expect({ path, body, status: result.status }).toEqual({ path, body, status: 400 });
      expectErrorShape(result.body, 'invalid_request');
      expect((result.body as { error: { param: string } }).error.param).toBe(param);
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    expect((await database.pool.query('select count(*) from audit_log')).rows[0]).toEqual(
      auditsBefore,
    );
    // A name with a whole surrogate pair (an emoji) is kept as sent.
    const emoji = await adminCall<{ name: string }>('POST', `/users/${userId}/keys`, {
      name: 'laptop 💻',
    });
    expect(emoji.status).toBe(201);
    expect(emoji.body.name).toBe('laptop 💻');
  });
});

describe('the key cache when its LISTEN session is ended by the server', () => {
  test('it listens again on one session, not several; a key revoked meanwhile is refused', async () => {
    const userId = await newUser(930_006);
    const newKey = async () => {
      const made = await adminCall<{ id: string; key: string }>(
        'POST',
        `/users/${userId}/keys`,
        {},
      );
      expect(made.status).toBe(201);
      return made.body;
    };
    const leaked = await newKey();
    const kept = await newKey();
    const me = async (key: string) =>
      (await call(service, 'GET', '/api/me', { token: key })).status;
    const listeners = async () =>
      (
        await database.pool.query<{ pid: number }>(
          `select pid from pg_stat_activity
            where datname = current_database() and query = 'listen lingxi_keys'`,
        )
      ).rows.map((r) => r.pid);
    const revokeBehindItsBack = (keyId: string) =>
      database.pool.query('update api_keys set revoked_at = now() where id = $1', [keyId]);

    for (let restart = 1; restart <= 3; restart += 1) {
      const before = await listeners();
      expect(before).toHaveLength(1);
      expect(await me(kept.key)).toBe(200); // cached
      // The session ends (a database restart, an administrator, a failover).
      await database.pool.query('select pg_terminate_backend($1)', [before[0]]);
      await until('a new LISTEN session', async () => {
        const now = await listeners();
        return now.length > 0 && !now.includes(before[0]!);
      });
      // It caches again once it listens (a revocation behind its back is not seen)...
      await until('the key cached again', async () => {
        await database.pool.query('update api_keys set revoked_at = null where id = $1', [kept.id]);
        expect(await me(kept.key)).toBe(200);
        await revokeBehindItsBack(kept.id);
        return (await me(kept.key)) === 200;
      });
      // ...and hears NOTIFY again: a revocation whose NOTIFY reaches it is refused at once.
      await database.pool.query(`select pg_notify('lingxi_keys', 'changed')`);
      await expect.poll(() => me(kept.key), { timeout: 20_000, interval: 20 }).toBe(401);
      await database.pool.query('update api_keys set revoked_at = null where id = $1', [kept.id]);
      // One session: each loss used to open two or three, none of them ever closed.
      expect({ restart, sessions: (await listeners()).length }).toEqual({ restart, sessions: 1 });
    }

    // A key revoked while nobody listened (its NOTIFY lost with the session): refused once the
    // session is gone, and after it listens again.
    expect(await me(leaked.key)).toBe(200);
    await revokeBehindItsBack(leaked.id);
    expect(await me(leaked.key)).toBe(200);
    const [listener] = await listeners();
    await database.pool.query('select pg_terminate_backend($1)', [listener]);
    await expect.poll(() => me(leaked.key), { timeout: 20_000, interval: 20 }).toBe(401);
    await until('a new LISTEN session', async () => {
      const now = await listeners();
      return now.length > 0 && !now.includes(listener!);
    });
    expect(await me(leaked.key)).toBe(401);
    expect(await me(kept.key)).toBe(200);
  });
});

describe('the key cache when its LISTEN session dies without a word', () => {
  test('a key revoked on another process is refused well inside the cache minute', async () => {
    const userId = await newUser(930_011);
    const made = await adminCall<{ id: string; key: string }>('POST', `/users/${userId}/keys`, {});
    const other = await adminCall<{ id: string; key: string }>('POST', `/users/${userId}/keys`, {});
    const url = new URL(database.url);
    const link = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
    url.host = link.address;
    // This process's key cache, its LISTEN session through a link the test can kill silently.
    const keys = new KeyAuthenticator(
      service.runtime.database.db,
      url.toString(),
      createLogger('silent'),
      { pingMs: 200, connectTimeoutMs: 1000 },
    );
    await keys.start();
    try {
      const bearer = `Bearer ${made.body.key}`;
      await expect(keys.authenticate(bearer)).resolves.toMatchObject({ keyId: made.body.id });
      // The link dies without a reset (a failover, a dropped NAT entry): the session is still
      // open as far as this process knows, and the NOTIFY of a revocation on another process
      // never arrives.
      link.swallowAnswers(true);
      await database.pool.query(
        `with revoked as (update api_keys set revoked_at = now() where id = $1 returning id)
         select pg_notify('lingxi_keys', 'changed') from revoked`,
        [made.body.id],
      );
      // Without a check of the session: accepted from the cache for the rest of its minute.
      await expect
        .poll(
          () =>
            keys.authenticate(bearer).then(
              () => 'accepted',
              () => 'refused',
            ),
          {
            timeout: 20_000,
            interval: 50,
          },
        )
        .toBe('refused');
      // The link back: a new session listens, and the other key still works.
      link.swallowAnswers(false);
      await expect(keys.authenticate(`Bearer ${other.body.key}`)).resolves.toMatchObject({
        keyId: other.body.id,
      });
      await expect(keys.authenticate(bearer)).rejects.toMatchObject({ status: 401 });
    } finally {
      await keys.close();
      await link.close();
    }
  });
});

describe('lingxi keys list, with key names their owner chose', () => {
  test('a line break, terminal escapes or a bidi override in a name are shown escaped, never acted on', async () => {
    const userId = await newUser(930_007);
    const { token } = await devSignIn(service, 930_007);
    const real = await call<{ id: string }>(service, 'POST', '/api/me/keys', {
      token,
      body: { name: 'laptop' },
    });
    expect(real.status).toBe(201);
    // A fake row claiming the key is revoked, then the screen cleared and a hidden text.
    const forged = `x\n${real.body.id}  laptop  lx-fake...  2026-01-01  -  2026-01-02 (revoked)`;
    const names = [forged, 'a\u001b[2J\u001b[Hb\r', 'gpt\u202etxt.exe', 'c\u009b31md'];
    for (const name of names) {
      const made = await call(service, 'POST', '/api/me/keys', { token, body: { name } });
      expect(made.status).toBe(201);
    }
    dir = mkdtempSync(join(tmpdir(), 'lingxi-admin-review-'));
    const configFile = join(dir, 'lingxi.config.json');
    writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));

    const listed = await runLingxi(configFile, ['keys', 'list', '--user', userId]);
    expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: '' });
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2 + 1 + names.length); // header, rule, one line per key
    const acting = [...listed.stdout].filter(
      (c) => c !== '\n' && /\p{Cc}|[\u202a-\u202e]/u.test(c),
    );
    expect(acting).toEqual([]);
    expect(listed.stdout).toContain('x\\u000a');
    expect(listed.stdout).toContain('a\\u001b[2J\\u001b[Hb\\u000d');
    expect(listed.stdout).toContain('gpt\\u202etxt.exe');
    // --json keeps the names exactly.
    const json = await runLingxi(configFile, ['keys', 'list', '--user', userId, '--json']);
    const data = json.json()['data'] as Array<{ name: string }>;
    expect(data.map((k) => k.name).sort()).toEqual([...names, 'laptop'].sort());
  });
});
