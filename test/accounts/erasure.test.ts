import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { moveErasedBalances } from '../../src/account/eraseAccount.js';
import { runCli } from '../../src/cli/main.js';
import { runRetention } from '../../src/privacy/retention.js';
import type { TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { ADMIN_TOKEN, admin, userWithKey, type TestService } from '../support/service.js';
import { useGatewayStack, sdk } from '../gateway/fixtures.js';
import { waitFor } from '../support/poll.js';
import { call, devSignIn, expectErrorShape, rowCounts } from './support.js';

let database: TestDatabase;
let service: TestService;

useGatewayStack(
  (stack) => ({ database, service } = stack),
  (config) => ({ ...config, telegram: { devSignIn: true } }),
);

const CONFIRM = { confirm: 'erase my account' };

async function customerWithHistory(telegramId: number, username: string) {
  const { userId, apiKey } = await userWithKey(service, {
    telegramId,
    balance: '10',
    key: { name: `${username}'s laptop` },
  });
  const { token } = await devSignIn(service, telegramId, username);
  await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'hello [[tokens=4]]' }],
  });
  await service.http.services.work.drain(5000);
  return { userId, apiKey, token };
}

async function auditCount(): Promise<number> {
  const { rows } = await database.pool.query<{ n: string }>(
    'select count(*)::text as n from audit_log',
  );
  return Number(rows[0]!.n);
}

async function trialBalanceNets() {
  const { body } = await admin<{ totals: Array<{ net: string }> }>(
    service,
    'GET',
    '/trial-balance',
  );
  return body.totals.every((t) => t.net === '0');
}

test('a DELETE without the confirmation erases nothing', async () => {
  const { token } = await customerWithHistory(5101, 'careful');
  const before = await rowCounts(database.pool);
  for (const body of [undefined, {}, { confirm: 'yes' }, { confirm: 'ERASE MY ACCOUNT' }, 'null']) {
    const result = await call(service, 'DELETE', '/api/me', {
      token,
      ...(body === undefined ? {} : { body }),
    });
    expect(result.status).toBe(400);
    expectErrorShape(result.body, 'confirmation_required');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
  expect((await call(service, 'GET', '/api/me', { token })).status).toBe(200);
});

test('erasure removes personal data, revokes access at once, and keeps the books whole', async () => {
  const { userId, apiKey, token } = await customerWithHistory(5201, 'leaving_user');
  const other = await customerWithHistory(5202, 'staying_user');
  const { token: secondSession } = await devSignIn(service, 5201);
  // Warm the key cache: erasure must reach it by NOTIFY.
  expect((await call(service, 'GET', '/v1/models', { token: apiKey })).status).toBe(200);
  const balanceBefore = await call<{ available: string; posted: string }>(
    service,
    'GET',
    '/api/me/balance',
    { token },
  );
  const remaining = balanceBefore.body.available;
  expect(new Decimal(remaining).gt(0)).toBe(true);
  const ledgerBefore = await ledgerRowCounts(database.pool);
  const usageBefore = await database.pool.query(
    'select id, cost_usd::text, entry_id from usage_records where user_id = $1 order by id',
    [userId],
  );

  const result = await call<Record<string, unknown>>(service, 'DELETE', '/api/me', {
    token,
    body: CONFIRM,
  });
  expect(result.status).toBe(200);
  expect(result.body).toMatchObject({
    id: userId,
    status: 'erased',
    keysRevoked: 1,
    sessionsEnded: 2,
    usageRowsScrubbed: 1,
    unclaimedBalance: {
      amount: remaining,
      currency: 'USD',
      account: `liabilities:unclaimed:${userId}`,
      entryId: expect.stringMatching(/^[0-9a-f-]{36}$/),
    },
  });

  // Keys and sessions stop at once, and say why.
  for (const credential of [apiKey, token, secondSession]) {
    const me = await call(service, 'GET', '/api/me', { token: credential });
    expect(me.status).toBe(403);
    expectErrorShape(me.body, 'account_erased');
  }
  const models = await call(service, 'GET', '/v1/models', { token: apiKey });
  expect(models.status).toBe(403);
  expectErrorShape(models.body, 'account_erased');

  // Personal data is gone; the row stays so the account codes still resolve.
  const { rows: users } = await database.pool.query('select * from users where id = $1', [userId]);
  expect(users[0]).toMatchObject({
    status: 'erased',
    telegram_id: null,
    username: null,
    first_name: null,
    last_name: null,
    photo_url: null,
  });
  const { rows: keys } = await database.pool.query(
    'select name, revoked_at from api_keys where user_id = $1',
    [userId],
  );
  expect(keys.every((k) => k.name === '' && k.revoked_at !== null)).toBe(true);
  // Sessions are revoked (a token hash, a method and times: no personal data); retention
  // deletes them later, as any signed-out session.
  const { rows: sessions } = await database.pool.query(
    'select revoked_at from sessions where user_id = $1',
    [userId],
  );
  expect(sessions).toHaveLength(2);
  expect(sessions.every((s) => s.revoked_at !== null)).toBe(true);
  const { rows: usage } = await database.pool.query(
    'select id, cost_usd::text, entry_id, client_ip, user_agent from usage_records where user_id = $1 order by id',
    [userId],
  );
  expect(usage.map(({ id, cost_usd, entry_id }) => ({ id, cost_usd, entry_id }))).toEqual(
    usageBefore.rows,
  );
  expect(usage.every((u) => u.client_ip === null && u.user_agent === null)).toBe(true);
  const stored = JSON.stringify(
    (
      await database.pool.query(
        'select * from users, api_keys where users.id = $1 and api_keys.user_id = users.id',
        [userId],
      )
    ).rows,
  );
  expect(stored).not.toContain('leaving_user');
  expect(stored).not.toContain('5201');

  // The books: one new entry of two postings; the balance moved to the unclaimed liability.
  const ledgerAfter = await ledgerRowCounts(database.pool);
  expect(ledgerAfter.entries).toBe(ledgerBefore.entries! + 1);
  expect(ledgerAfter.postings).toBe(ledgerBefore.postings! + 2);
  const customer = await admin<{ posted: string; available: string }>(
    service,
    'GET',
    `/users/${userId}/balance`,
  );
  expect(customer.body).toMatchObject({ posted: '0', available: '0' });
  const { rows: unclaimed } = await database.pool.query(
    `select credits_posted - debits_posted as balance, type from ledger_accounts where code = $1`,
    [`liabilities:unclaimed:${userId}`],
  );
  expect(new Decimal(unclaimed[0].balance).toString()).toBe(remaining);
  expect(unclaimed[0].type).toBe('liability');
  expect(await trialBalanceNets()).toBe(true);
  expect(await service.runtime.ledger.checkBalances()).toEqual([]);

  // The admin still finds the account by id, marked erased; the audit log says who and when.
  const view = await admin<Record<string, unknown>>(service, 'GET', `/users/${userId}`);
  expect(view.body).toMatchObject({ status: 'erased', telegramId: null, username: null });
  expect(view.body['erasedAt']).toEqual(expect.any(String));
  const log = await admin<{ data: Array<{ action: string; actor: string; ip: string | null }> }>(
    service,
    'GET',
    `/audit-log?action=account.erase&target=user:${userId}`,
  );
  expect(log.body.data).toEqual([
    expect.objectContaining({ action: 'account.erase', actor: `user:${userId}`, ip: null }),
  ]);

  // The other customer is untouched.
  expect((await call(service, 'GET', '/api/me', { token: other.token })).status).toBe(200);
  expect((await call(service, 'GET', '/api/me', { token: other.apiKey })).status).toBe(200);

  // The same Telegram account signing in again starts a new, empty account.
  const fresh = await devSignIn(service, 5201);
  expect(fresh.userId).not.toBe(userId);
  const freshBalance = await call<{ posted: string }>(service, 'GET', '/api/me/balance', {
    token: fresh.token,
  });
  expect(freshBalance.body.posted).toBe('0');
});

test('a retried DELETE /api/me (its first answer lost) is told 403 account_erased, nothing changed, until retention deletes the sessions', async () => {
  const { userId, token } = await customerWithHistory(5206, 'retrying_user');
  const { token: signedOut } = await devSignIn(service, 5206);
  expect((await call(service, 'POST', '/api/auth/logout', { token: signedOut })).status).toBe(200);
  const first = await call<Record<string, unknown>>(service, 'DELETE', '/api/me', {
    token,
    body: CONFIRM,
  });
  expect(first.status).toBe(200);

  const before = await rowCounts(database.pool);
  const audited = await auditCount();
  const retry = await call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
  expect(retry.status).toBe(403);
  expectErrorShape(retry.body, 'account_erased');
  // The session signed out before the erasure is not counted: it had already ended.
  expect(first.body['sessionsEnded']).toBe(1);
  for (const credential of [token, signedOut]) {
    const me = await call(service, 'GET', '/api/me', { token: credential });
    expect(me.status).toBe(403);
    expectErrorShape(me.body, 'account_erased');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
  expect(await auditCount()).toBe(audited);

  // The rows are kept no longer than any signed-out session's.
  await database.pool.query(
    `update sessions set revoked_at = now() - interval '31 days', expires_at = now() - interval '1 day',
            created_at = now() - interval '40 days' where user_id = $1`,
    [userId],
  );
  await runRetention(service.runtime.database.db, service.runtime.config, new Date());
  const { rows } = await database.pool.query('select 1 from sessions where user_id = $1', [userId]);
  expect(rows).toEqual([]);
  const gone = await call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
  expect(gone.status).toBe(401);
  expectErrorShape(gone.body, 'invalid_session');
});

test('a DELETE /api/me made with an API key and retried with it is told 403 account_erased, as a session is', async () => {
  const { apiKey } = await userWithKey(service, { telegramId: 5208 });
  const first = await call(service, 'DELETE', '/api/me', { token: apiKey, body: CONFIRM });
  expect(first.status).toBe(200);
  const before = await rowCounts(database.pool);
  // The erasure revoked the key; its holder is told why it no longer works.
  for (const [method, path] of [
    ['DELETE', '/api/me'],
    ['GET', '/api/me'],
    ['GET', '/v1/models'],
  ] as const) {
    const retry = await call(service, method, path, {
      token: apiKey,
      ...(method === 'DELETE' ? { body: CONFIRM } : {}),
    });
    expect({ path, status: retry.status }).toEqual({ path, status: 403 });
    expectErrorShape(retry.body, 'account_erased');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('a DELETE /api/me retried while the first still runs is told 403 account_erased, not 409', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 5209 });
  // Both requests are past authentication (the account still active) and wait for the user's
  // row: the client gave up on the first and retried, and the first then went through.
  const blocker = await database.pool.connect();
  let answers: Array<{ status: number; body: unknown }>;
  try {
    await blocker.query('begin');
    await blocker.query('select 1 from users where id = $1 for update', [userId]);
    const both = Promise.all(
      [1, 2].map(() => call(service, 'DELETE', '/api/me', { token: apiKey, body: CONFIRM })),
    );
    both.catch(() => {});
    await waitFor('both erasures to wait for the user row', async () => {
      const { rows } = await database.pool.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'
            and query ilike '%"users"%for update%' and pid <> pg_backend_pid()`,
      );
      return rows[0]!.n === 2;
    });
    await blocker.query('commit');
    answers = await both;
  } finally {
    blocker.release();
  }
  const statuses = answers.map((answer) => answer.status).sort();
  expect(statuses).toEqual([200, 403]);
  expectErrorShape(answers.find((answer) => answer.status !== 200)!.body, 'account_erased');
  const { rows } = await database.pool.query(
    `select count(*)::int as n from audit_log where action = 'account.erase' and target = $1`,
    [`user:${userId}`],
  );
  expect(rows[0].n).toBe(1);
});

test('an API key left unrevoked on an erased account answers 403 account_erased, as a session does', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 5207 });
  // Erasure revokes keys in its own transaction; the state of a key left unrevoked is set
  // directly: the account erased, its key not revoked (and never cached).
  await database.pool.query(
    `update users set status = 'erased', telegram_id = null, username = null, first_name = null,
            last_name = null, photo_url = null, erased_at = now() where id = $1`,
    [userId],
  );
  for (const path of ['/api/me', '/v1/models']) {
    const result = await call(service, 'GET', path, { token: apiKey });
    expect({ path, status: result.status }).toEqual({ path, status: 403 });
    expectErrorShape(result.body, 'account_erased');
  }
  const refused = await sdk(service.url, apiKey)
    .chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hello [[tokens=2]]' }],
    })
    .catch((error: unknown) => error);
  expect(refused).toMatchObject({ status: 403, code: 'account_erased' });
});

test('erasure leaves no key name in the answers kept for Idempotency-Key replays', async () => {
  const { token, userId } = await devSignIn(service, 5205, 'replaying_user');
  const own = await call(service, 'POST', '/api/me/keys', {
    token,
    body: { name: 'Jane Doe home laptop' },
    headers: { 'idempotency-key': 'create-key-1' },
  });
  expect(own.status).toBe(201);
  const byAdmin = await call(service, 'POST', `/admin/users/${userId}/keys`, {
    token: ADMIN_TOKEN,
    body: { name: 'Jane Doe work laptop' },
    headers: { 'idempotency-key': 'admin-key-1' },
  });
  expect(byAdmin.status).toBe(201);
  const kept = async () =>
    (
      await database.pool.query<{ key: string; response: unknown }>(
        `select key, response from http_idempotency where key in ($1, $2) order by key`,
        [`user:${userId}:create-key-1`, 'admin:admin-key-1'],
      )
    ).rows;
  expect(JSON.stringify(await kept())).toContain('Jane Doe');

  expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
  const after = await kept();
  // The user's own are gone; the admin's stays (a replay still answers) without the name.
  expect(after.map((row) => row.key)).toEqual(['admin:admin-key-1']);
  expect(JSON.stringify(after)).not.toContain('Jane Doe');
});

test("erasure leaves none of the person's profile in the admin's suspension answers kept for Idempotency-Key replays", async () => {
  const { token, userId } = await devSignIn(service, 870_555_123, 'suspended_once');
  const adminPost = (path: string, key: string, body: unknown) =>
    call<Record<string, unknown>>(service, 'POST', `/admin/users/${userId}/${path}`, {
      token: ADMIN_TOKEN,
      body,
      headers: { 'idempotency-key': key },
    });
  const suspend = { reason: 'chargeback dispute opened by Jane Q. Roe' };
  const unsuspend = { reason: 'settled' };
  expect((await adminPost('suspend', 'suspend-870555', suspend)).status).toBe(200);
  expect((await adminPost('unsuspend', 'unsuspend-870555', unsuspend)).status).toBe(200);
  const kept = async () =>
    JSON.stringify(
      (
        await database.pool.query(
          `select response from http_idempotency where key in ('admin:suspend-870555', 'admin:unsuspend-870555')`,
        )
      ).rows,
    );
  expect(await kept()).toContain('suspended_once');

  expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
  const after = await kept();
  for (const personal of ['suspended_once', '870555123', 'Jane Q. Roe'])
    expect(after).not.toContain(personal);
  // A replay still answers, as the erased account is now: no identity.
  const replay = await adminPost('suspend', 'suspend-870555', suspend);
  expect(replay.headers.get('idempotent-replayed')).toBe('true');
  expect(replay.body).toMatchObject({ id: userId, telegramId: null, username: null });
  expect(JSON.stringify(replay.body)).not.toContain('Jane Q. Roe');
});

test('erasure leaves no key name in the audit log: keys made by an admin or with the CLI are audited by id', async () => {
  const { token, userId } = await devSignIn(service, 870_101, 'audited_user');
  const byAdmin = await admin(service, 'POST', `/users/${userId}/keys`, {
    name: 'Jane Roe office laptop',
  });
  expect(byAdmin.status).toBe(201);
  const configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-erasure-')), 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
  const code = await runCli(
    ['keys', 'create', '--user', userId, '--name', 'Jane Roe phone', '--config', configFile],
    { stdout: () => {}, stderr: () => {} },
  );
  expect(code).toBe(0);

  expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
  // The audit log is never changed, so what it keeps about the user outlives the erasure.
  const { rows } = await database.pool.query<{ action: string; details: unknown }>(
    `select action, details from audit_log where target = $1 order by id`,
    [`user:${userId}`],
  );
  expect(rows.filter((row) => row.action === 'key.create')).toHaveLength(2);
  expect(JSON.stringify(rows)).not.toContain('Jane Roe');
});

test('an account with nothing left erases without a ledger entry', async () => {
  const { token } = await devSignIn(service, 5301, 'empty');
  const ledgerBefore = await ledgerRowCounts(database.pool);
  const result = await call<{ unclaimedBalance: { amount: string; entryId: string | null } }>(
    service,
    'DELETE',
    '/api/me',
    { token, body: CONFIRM },
  );
  expect(result.status).toBe(200);
  expect(result.body.unclaimedBalance).toMatchObject({ amount: '0', entryId: null });
  expect(await ledgerRowCounts(database.pool)).toEqual(ledgerBefore);
});

test("what reaches an erased user's balance later (a call released after the erasure, a move that failed) is moved to unclaimed by the retention job, once", async () => {
  const { userId, token } = await devSignIn(service, 870_201, 'late');
  const active = await userWithKey(service, { telegramId: 870_202, balance: '3' });
  expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
  const { ledger, database: db } = service.http.services.runtime;
  // Money that lands in the customer account after the erasure (as a hold released late does).
  await ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: 'expenses:promotions', amount: '1.25' },
      { account: `liabilities:customers:${userId}`, amount: '-1.25' },
    ],
  });
  expect(await moveErasedBalances(db.db, ledger)).toEqual({ moved: 1, failed: 0 });
  expect(await moveErasedBalances(db.db, ledger)).toEqual({ moved: 0, failed: 0 });
  const balance = async (code: string) => (await ledger.getBalance(code)).available.toString();
  expect(await balance(`liabilities:customers:${userId}`)).toBe('0');
  expect(await balance(`liabilities:unclaimed:${userId}`)).toBe('1.25');
  // A user who was not erased keeps their balance.
  expect(await balance(`liabilities:customers:${active.userId}`)).toBe('3');
  expect(await ledger.checkBalances()).toEqual([]);
  expect(await trialBalanceNets()).toBe(true);
});

test("one erased user whose move throws does not stop the retention job moving the others' balances; the failure is counted and logged with its cause", async () => {
  const erased: string[] = [];
  for (const telegramId of [870_301, 870_302, 870_303]) {
    const { userId, token } = await devSignIn(service, telegramId);
    expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
    erased.push(userId);
  }
  const { ledger, database: db } = service.http.services.runtime;
  for (const userId of erased) {
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '2' },
        { account: `liabilities:customers:${userId}`, amount: '-2' },
      ],
    });
  }
  // The first in the job's order (by id) cannot be moved: its erasure entry is refused.
  const [stuck, ...others] = [...erased].sort();
  await database.pool.query(`
    create function test_refuse_erasure() returns trigger language plpgsql as $$
    begin
      if new.kind = 'erasure' and new.metadata->>'userId' = '${stuck}' then
        raise exception 'injected: erasure entry refused for ${stuck}';
      end if;
      return new;
    end $$;
    create trigger test_refuse_erasure before insert on ledger_entries
      for each row execute function test_refuse_erasure();`);
  const logged: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'error' },
    { write: (line: string) => logged.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const balance = async (code: string) => (await ledger.getBalance(code)).available.toString();
  try {
    expect(await moveErasedBalances(db.db, ledger, { logger })).toEqual({ moved: 2, failed: 1 });
  } finally {
    await database.pool.query(
      'drop trigger test_refuse_erasure on ledger_entries; drop function test_refuse_erasure()',
    );
  }
  for (const userId of others) {
    expect(await balance(`liabilities:customers:${userId}`)).toBe('0');
    expect(await balance(`liabilities:unclaimed:${userId}`)).toBe('2');
  }
  expect(await balance(`liabilities:customers:${stuck}`)).toBe('2');
  expect(logged).toHaveLength(1);
  expect(logged[0]).toMatchObject({ msg: 'erased balance not moved', userId: stuck });
  // The cause (the database's refusal), not only the wrapper's message.
  expect(JSON.stringify(logged[0]!.err)).toContain('injected: erasure entry refused');
  // Next run, unblocked, it is moved.
  expect(await moveErasedBalances(db.db, ledger)).toEqual({ moved: 1, failed: 0 });
  expect(await balance(`liabilities:unclaimed:${stuck}`)).toBe('2');
  expect(await ledger.checkBalances()).toEqual([]);
});

test('an erasure whose balance cannot be moved yet (500 erasure_incomplete) is still in the audit log', async () => {
  const { userId, token } = await customerWithHistory(5601, 'half_erased');
  await database.pool.query(`
    create function test_refuse_erasure_entry() returns trigger language plpgsql as $$
    begin
      if new.kind = 'erasure' then raise exception 'injected: erasure entry refused'; end if;
      return new;
    end $$;
    create trigger test_refuse_erasure_entry before insert on ledger_entries
      for each row execute function test_refuse_erasure_entry();`);
  try {
    const result = await call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
    expect(result.status).toBe(500);
    expectErrorShape(result.body, 'erasure_incomplete', 'api_error');
  } finally {
    await database.pool.query(
      'drop trigger test_refuse_erasure_entry on ledger_entries; drop function test_refuse_erasure_entry()',
    );
  }
  // Erased all the same (identity gone, access ended)...
  const { rows: users } = await database.pool.query('select status from users where id = $1', [
    userId,
  ]);
  expect(users[0]).toMatchObject({ status: 'erased' });
  const me = await call(service, 'GET', '/api/me', { token });
  expect(me.status).toBe(403);
  expectErrorShape(me.body, 'account_erased');
  // ...and the audit log says who erased it and when.
  const log = await admin<{ data: Array<{ action: string; actor: string }> }>(
    service,
    'GET',
    `/audit-log?action=account.erase&target=user:${userId}`,
  );
  expect(log.body.data).toEqual([
    expect.objectContaining({ action: 'account.erase', actor: `user:${userId}` }),
  ]);
});

test('an erased user gets no new API keys and no admin adjustments: 409, nothing written', async () => {
  const { userId } = await customerWithHistory(5501, 'gone');
  const { token } = await devSignIn(service, 5501);
  expect((await call(service, 'DELETE', '/api/me', { token, body: CONFIRM })).status).toBe(200);
  const before = await rowCounts(database.pool);
  const audited = await auditCount();

  const key = await admin(service, 'POST', `/users/${userId}/keys`, { name: 'revived' });
  expect(key.status).toBe(409);
  expectErrorShape(key.body, 'user_erased');
  for (const amount of ['10', '-1']) {
    const adjusted = await admin(service, 'POST', `/users/${userId}/adjustments`, {
      amount,
      reason: 'gift',
    });
    expect({ amount, status: adjusted.status }).toEqual({ amount, status: 409 });
    expectErrorShape(adjusted.body, 'user_erased');
  }

  // The CLI refuses the same way: exit 1 (a refusal) with the reason, nothing printed.
  const configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-erasure-')), 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
  for (const args of [
    ['keys', 'create', '--user', userId],
    ['credit', '--user', userId, '--amount', '10', '--reason', 'gift'],
  ]) {
    let stdout = '';
    let stderr = '';
    const code = await runCli([...args, '--config', configFile], {
      stdout: (text) => (stdout += text),
      stderr: (text) => (stderr += text),
    });
    expect({ args, code, stdout }).toEqual({ args, code: 1, stdout: '' });
    expect(stderr).toMatch(/^lingxi: this user was erased; /);
  }

  expect(await rowCounts(database.pool)).toEqual(before);
  expect(await auditCount()).toBe(audited);
  const balance = await admin<{ posted: string }>(service, 'GET', `/users/${userId}/balance`);
  expect(balance.body.posted).toBe('0');
});

test('an admin credit racing an erasure waits for it and is refused: no credit lands beside the unclaimed balance', async () => {
  const { userId } = await customerWithHistory(5502, 'racing');
  const adjustments = async () =>
    (
      await database.pool.query(
        `select count(*)::int as n from ledger_entries where kind = 'adjustment' and metadata->>'userId' = $1`,
        [userId],
      )
    ).rows[0].n as number;
  const before = await adjustments();
  // An erasure in progress: its transaction holds the user's row (as eraseAccount's does).
  const erasure = await database.pool.connect();
  try {
    await erasure.query('begin');
    await erasure.query('select 1 from users where id = $1 for update', [userId]);
    let settled = false;
    const credit = admin(service, 'POST', `/users/${userId}/adjustments`, {
      amount: '10',
      reason: 'gift',
    }).finally(() => (settled = true));
    // Until the credit either answered or waits on the user's row.
    for (;;) {
      const { rows } = await database.pool.query(
        `select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%from users%for share%'`,
      );
      if (settled || rows.length > 0) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await erasure.query(
      `update users set status = 'erased', erased_at = now(), telegram_id = null, username = null,
              first_name = null, last_name = null, photo_url = null where id = $1`,
      [userId],
    );
    await erasure.query('commit');
    const answer = await credit;
    expect(answer.status).toBe(409);
    expectErrorShape(answer.body, 'user_erased');
  } finally {
    erasure.release(true);
  }
  expect(await adjustments()).toBe(before);
});

test('a call authorised just before the erasure that settles after it records no IP address or user agent of the erased person', async () => {
  const { userId, apiKey, token } = await customerWithHistory(5501, 'racing');
  const waitingOnLocks = async (count: number) => {
    for (let i = 0; i < 200; i += 1) {
      const { rows } = await database.pool.query<{ n: string }>(
        `select count(*)::text as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`,
      );
      if (Number(rows[0]!.n) >= count) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`never ${count} sessions waiting on a lock`);
  };
  // Holds the user's row as a moment's contention would: the erasure has checked that no call
  // is in flight and waits for the row; a call starts meanwhile and settles once it is free.
  const blocker = await database.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query('select 1 from users where id = $1 for update', [userId]);
    const erasure = call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
    await waitingOnLocks(1);
    const chat = call(service, 'POST', '/v1/chat/completions', {
      token: apiKey,
      headers: { 'user-agent': 'RacingClient/1.0 (Jane Roe laptop)' },
      body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi [[tokens=3]]' }] },
    });
    await waitingOnLocks(2);
    await blocker.query('commit');
    expect((await erasure).status).toBe(200);
    expect((await chat).status).toBe(200);
  } finally {
    blocker.release();
  }
  await service.http.services.work.drain(5000);
  const { rows } = await database.pool.query(
    'select cost_usd::text, client_ip, user_agent from usage_records where user_id = $1 order by id',
    [userId],
  );
  expect(rows).toHaveLength(2);
  expect(rows.map((row) => [row.client_ip, row.user_agent])).toEqual([
    [null, null],
    [null, null],
  ]);
});

test('erasure waits for calls in flight: 409, nothing changed', async () => {
  const { userId, token } = await customerWithHistory(5401, 'busy');
  const hold = await service.runtime.ledger.createHold({
    debitAccount: `liabilities:customers:${userId}`,
    creditAccount: 'revenue:usage',
    amount: '1',
    expiresAt: new Date(Date.now() + 60_000),
  });
  const before = await rowCounts(database.pool);
  const result = await call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
  expect(result.status).toBe(409);
  expectErrorShape(result.body, 'calls_in_flight');
  expect(await rowCounts(database.pool)).toEqual(before);
  await service.runtime.ledger.voidHold({ holdId: hold.holdId });
  const retry = await call(service, 'DELETE', '/api/me', { token, body: CONFIRM });
  expect(retry.status).toBe(200);
  expect(await trialBalanceNets()).toBe(true);
});
