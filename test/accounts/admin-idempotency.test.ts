import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { runLingxi } from '../support/cli.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { ADMIN_TOKEN, admin, startTestService, type TestService } from '../support/service.js';
import { call, devSignIn, expectErrorShape } from './support.js';

/**
 * Idempotency-Key on the admin API when things go wrong between the work and the answer: the
 * process answering dies mid-request, or the request fails after part of it was written. The
 * operator's script retries with the same key and must end with the work done once, and
 * audited once.
 */

const LEASE_MS = 1000;

let database: TestDatabase;
let service: TestService;
let dir: string;
let configFile: string;
const processes: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { http: { idempotencyLeaseMs: LEASE_MS }, telegram: { devSignIn: true } },
  });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-admin-idem-'));
  configFile = join(dir, 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      http: { host: '127.0.0.1', port: 0, idempotencyLeaseMs: LEASE_MS },
      database: { url: database.url, poolSize: 5 },
      adminToken: ADMIN_TOKEN,
      log: { level: 'info' },
    }),
  );
});
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => p.exited));
  await service?.stop();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function serve(): Promise<LingxiProcess & { baseUrl: string }> {
  const started = startLingxi(['serve', '--config', configFile]);
  processes.push(started);
  return Object.assign(started, { baseUrl: await started.url() });
}

async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function newUser(telegramId: number): Promise<string> {
  const created = await admin<{ id: string }>(service, 'POST', '/users', { telegramId });
  expect(created.status).toBe(201);
  return created.body.id;
}

function adjust(baseUrl: string, userId: string, key: string, amount: string) {
  return call<{ entryId: string; balance: { available: string } }>(
    { url: baseUrl },
    'POST',
    `/admin/users/${userId}/adjustments`,
    {
      token: ADMIN_TOKEN,
      headers: { 'idempotency-key': key },
      body: { amount, reason: 'goodwill credit' },
    },
  );
}

async function adjustmentEntries(userId: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: string }>(
    `select count(*)::text as n from ledger_entries
      where kind = 'adjustment' and metadata->>'userId' = $1`,
    [userId],
  );
  return Number(rows[0]!.n);
}

async function audits(action: string, target: string): Promise<Array<Record<string, unknown>>> {
  const { rows } = await database.pool.query<{ details: Record<string, unknown> }>(
    'select details from audit_log where action = $1 and target = $2 order by id',
    [action, target],
  );
  return rows.map((row) => row.details);
}

describe('a process killed while it runs a request with an Idempotency-Key', () => {
  test('a retry waits (409) while the first is alive, then, once it died, does the work once', async () => {
    const userId = await newUser(880_101);
    let whileAlive: Awaited<ReturnType<typeof adjust>>;
    const first = await serve();
    // The user's row locked: the adjustment waits inside the request, as a slow one would.
    const lock = await database.pool.connect();
    try {
      await lock.query('begin');
      await lock.query('select 1 from users where id = $1 for update', [userId]);
      void adjust(first.baseUrl, userId, 'crash-credit-1', '5').catch(() => {});
      await until('the claim of the first request', async () => {
        const { rowCount } = await database.pool.query(
          `select 1 from http_idempotency where key = 'admin:crash-credit-1' and status is null`,
        );
        return rowCount === 1;
      });

      // Alive for longer than the lease: its heartbeat keeps the key its own.
      await sleep(LEASE_MS * 2.5);
      whileAlive = await adjust(first.baseUrl, userId, 'crash-credit-1', '5');
      expect(whileAlive.status).toBe(409);
      expectErrorShape(whileAlive.body, 'idempotency_in_progress');

      first.child.kill('SIGKILL');
      expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
    } finally {
      await lock.query('commit');
      lock.release();
    }

    // The operator's script retries on another process once the lease has run out.
    await sleep(LEASE_MS * 1.5);
    const retried = await adjust(service.url, userId, 'crash-credit-1', '5');
    expect(retried.status, retried.text).toBe(201);
    expect(retried.body.balance.available).toBe('5');
    const replayed = await adjust(service.url, userId, 'crash-credit-1', '5');
    expect(replayed.status).toBe(201);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(replayed.body.entryId).toBe(retried.body.entryId);

    expect(await adjustmentEntries(userId)).toBe(1);
    const balance = await admin<{ available: string }>(service, 'GET', `/users/${userId}/balance`);
    expect(balance.body.available).toBe('5');
    expect(await audits('balance.adjust', `user:${userId}`)).toHaveLength(1);
    expect(whileAlive.headers.get('retry-after')).toBe('1');
  });
});

describe('user and key creation killed between the work and its answer', () => {
  /**
   * Runs `send` (a request with an Idempotency-Key) on a process of its own and kills that
   * process while the request writes its audit record: after the user or key is inserted,
   * before the key's answer is recorded. Then retries on the test service, first while the
   * dead process's claim still has a lease (409 idempotency_in_progress), until it has not.
   */
  async function killedMidRequest<T>(
    send: (baseUrl: string) => Promise<{ status: number; body: T; text: string }>,
  ) {
    const doomed = await serve();
    const lock = await database.pool.connect();
    try {
      await lock.query('begin');
      await lock.query('lock table audit_log in share mode');
      void send(doomed.baseUrl).catch(() => {});
      await until('the request waiting to write its audit record', async () => {
        const { rowCount } = await database.pool.query(
          `select 1 from pg_locks l join pg_class c on c.oid = l.relation
            where c.relname = 'audit_log' and not l.granted`,
        );
        return rowCount === 1;
      });
      doomed.child.kill('SIGKILL');
      expect(await doomed.exited).toEqual({ code: null, signal: 'SIGKILL' });
    } finally {
      await lock.query('commit');
      lock.release();
    }
    let retried = await send(service.url);
    const deadline = Date.now() + 20_000;
    while (
      retried.status === 409 &&
      retried.text.includes('idempotency_in_progress') &&
      Date.now() < deadline
    ) {
      await sleep(50);
      retried = await send(service.url);
    }
    return retried;
  }

  const post = <T>(
    baseUrl: string,
    path: string,
    key: string,
    body: unknown,
    token = ADMIN_TOKEN,
  ) =>
    call<T>({ url: baseUrl }, 'POST', path, {
      token,
      headers: { 'idempotency-key': key },
      body,
    });

  test('a user: the retry answers 201 with the one user, not 409 user_exists; audited once', async () => {
    const send = (baseUrl: string) =>
      post<{ id: string }>(baseUrl, '/admin/users', 'crash-user-1', {
        telegramId: '880201',
        username: 'crash_user',
      });
    const retried = await killedMidRequest(send);
    expect(retried.status, retried.text).toBe(201);
    const replayed = await send(service.url);
    expect(replayed.status).toBe(201);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(replayed.body.id).toBe(retried.body.id);
    const { rows } = await database.pool.query(
      `select id::text from users where telegram_id = '880201'`,
    );
    expect(rows).toEqual([{ id: retried.body.id }]);
    expect(await audits('user.create', `user:${retried.body.id}`)).toHaveLength(1);
  });

  test('a key (admin API and /api/me/keys): the retry answers with one key, never a second one', async () => {
    const userId = await newUser(880_202);
    const session = await devSignIn(service, 880_203);
    for (const [owner, path, token] of [
      [userId, `/admin/users/${userId}/keys`, ADMIN_TOKEN],
      [session.userId, '/api/me/keys', session.token],
    ] as const) {
      const send = (baseUrl: string) =>
        post<{ id: string; key: string | null }>(
          baseUrl,
          path,
          `crash-key-${owner}`,
          { name: 'ci' },
          token,
        );
      const retried = await killedMidRequest(send);
      expect(retried.status, retried.text).toBe(201);
      const replayed = await send(service.url);
      expect(replayed.status, path).toBe(201);
      expect(replayed.body.id).toBe(retried.body.id);
      const { rows } = await database.pool.query(
        'select id::text from api_keys where user_id = $1',
        [owner],
      );
      expect(rows, path).toEqual([{ id: retried.body.id }]);
    }
  });
});

describe('a request that fails after its money moved', () => {
  // The audit insert fails once, as a database failover between two statements would.
  async function failAuditOnce<T>(action: string, run: () => Promise<T>): Promise<T> {
    await database.pool.query(`
      create table if not exists test_fail_audit (action text primary key);
      create or replace function test_fail_audit() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from test_fail_audit where action = new.action) then
          raise exception 'injected failure writing the audit log';
        end if;
        return new;
      end $$;
      drop trigger if exists test_fail_audit on audit_log;
      create trigger test_fail_audit before insert on audit_log
        for each row execute function test_fail_audit();`);
    await database.pool.query('insert into test_fail_audit values ($1)', [action]);
    try {
      return await run();
    } finally {
      await database.pool.query('delete from test_fail_audit');
    }
  }

  test('an adjustment retried with its key is credited once and audited once', async () => {
    const userId = await newUser(880_102);
    const failed = await failAuditOnce('balance.adjust', () =>
      adjust(service.url, userId, 'audit-credit-1', '7'),
    );
    expect(failed.status).toBe(500);
    expectErrorShape(failed.body, 'internal_error', 'api_error');

    const retried = await adjust(service.url, userId, 'audit-credit-1', '7');
    expect(retried.status, retried.text).toBe(201);
    expect(retried.body.balance.available).toBe('7');
    expect(await adjustmentEntries(userId)).toBe(1);
    const recorded = await audits('balance.adjust', `user:${userId}`);
    expect(recorded).toEqual([
      { amount: '7', reason: 'goodwill credit', entryId: retried.body.entryId },
    ]);
  });

  test('a manual entry and its reversal retried with their keys are each audited once', async () => {
    const entry = {
      description: 'custody correction',
      postings: [
        { account: 'assets:custody:tron:USDT:TXaudit', amount: '3', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-3', currency: 'USDT' },
      ],
    };
    const post = () =>
      call<{ entryId: string }>(service, 'POST', '/admin/entries', {
        token: ADMIN_TOKEN,
        headers: { 'idempotency-key': 'audit-entry-1' },
        body: entry,
      });
    expect((await failAuditOnce('entry.post', post)).status).toBe(500);
    const posted = await post();
    expect(posted.status, posted.text).toBe(201);
    expect(await audits('entry.post', `entry:${posted.body.entryId}`)).toHaveLength(1);

    const reverse = () =>
      call<{ entryId: string; reversedEntryId: string }>(
        service,
        'POST',
        `/admin/entries/${posted.body.entryId}/reversal`,
        {
          token: ADMIN_TOKEN,
          headers: { 'idempotency-key': 'audit-reversal-1' },
          body: { reason: 'booked twice' },
        },
      );
    expect((await failAuditOnce('entry.reverse', reverse)).status).toBe(500);
    const reversed = await reverse();
    expect(reversed.status, reversed.text).toBe(201);
    expect(await audits('entry.reverse', `entry:${posted.body.entryId}`)).toEqual([
      {
        entryId: reversed.body.entryId,
        reversedEntryId: posted.body.entryId,
        reason: 'booked twice',
      },
    ]);
    const { rows } = await database.pool.query(
      `select count(*)::int as n from ledger_entries where kind in ('manual', 'manual.reversal')`,
    );
    expect(rows[0]).toEqual({ n: 2 });
  });

  test('the CLI too: lingxi credit and entries post/reverse, failed at the audit and run again, write and audit once', async () => {
    const userId = await newUser(880_103);
    const credit = () =>
      runLingxi(configFile, [
        'credit',
        '--user',
        userId,
        '--amount',
        '4',
        '--reason',
        'cli goodwill',
        '--idempotency-key',
        'cli-audit-credit-1',
        '--json',
      ]);
    expect((await failAuditOnce('balance.adjust', credit)).code).toBe(2);
    const credited = await credit();
    expect(credited.code, credited.stderr).toBe(0);
    expect(await adjustmentEntries(userId)).toBe(1);
    expect(await audits('balance.adjust', `user:${userId}`)).toEqual([
      { amount: '4', reason: 'cli goodwill', entryId: credited.json()['entryId'] },
    ]);

    const entryFile = join(dir, 'entry.json');
    writeFileSync(
      entryFile,
      JSON.stringify({
        description: 'cli custody correction',
        postings: [
          { account: 'assets:custody:tron:USDT:TXcli', amount: '2', currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: '-2', currency: 'USDT' },
        ],
      }),
    );
    const post = () =>
      runLingxi(configFile, [
        'entries',
        'post',
        '--file',
        entryFile,
        '--idempotency-key',
        'cli-audit-entry-1',
        '--json',
      ]);
    expect((await failAuditOnce('entry.post', post)).code).toBe(2);
    const posted = await post();
    expect(posted.code, posted.stderr).toBe(0);
    const entryId = posted.json()['entryId'] as string;
    expect(await audits('entry.post', `entry:${entryId}`)).toHaveLength(1);

    const reverse = () =>
      runLingxi(configFile, [
        'entries',
        'reverse',
        '--entry',
        entryId,
        '--reason',
        'typo',
        '--idempotency-key',
        'cli-audit-reversal-1',
        '--json',
      ]);
    expect((await failAuditOnce('entry.reverse', reverse)).code).toBe(2);
    const reversed = await reverse();
    expect(reversed.code, reversed.stderr).toBe(0);
    expect(await audits('entry.reverse', `entry:${entryId}`)).toHaveLength(1);
    const { rows } = await database.pool.query(
      `select count(*)::int as n from ledger_entries
        where metadata->>'description' = 'cli custody correction' or reverses_entry_id = $1`,
      [entryId],
    );
    expect(rows[0]).toEqual({ n: 2 });
  });
});

describe('POST /admin/reconciliations', () => {
  test('networks that are not a list of names are a 400 naming the field, and nothing runs', async () => {
    const runs = async () =>
      (await database.pool.query('select 1 from reconciliation_runs')).rowCount;
    const before = await runs();
    for (const networks of ['tron', ['tron', 5], { name: 'tron' }, [['tron']]]) {
      const result = await admin(service, 'POST', '/reconciliations', { networks });
      expect(result.status, JSON.stringify(networks)).toBe(400);
      expectErrorShape(result.body, 'invalid_request');
      expect((result.body as { error: { param: string } }).error.param).toBe('networks');
    }
    expect(await runs()).toBe(before);
  });
});

describe('Idempotency-Key and the order of JSON keys', () => {
  const send = (path: string, key: string, json: string) =>
    call<{ id: string }>(service, 'POST', path, {
      token: ADMIN_TOKEN,
      headers: { 'idempotency-key': key },
      body: json,
    });

  test('the same request with its keys in another order (inside lists too) is a replay, not a 409', async () => {
    const first = await send(
      '/admin/users',
      'order-user-1',
      '{"telegramId":"880301","username":"ord"}',
    );
    expect(first.status, first.text).toBe(201);
    const reordered = await send(
      '/admin/users',
      'order-user-1',
      '{ "username": "ord", "telegramId": "880301" }',
    );
    expect(reordered.status, reordered.text).toBe(201);
    expect(reordered.headers.get('idempotent-replayed')).toBe('true');
    expect(reordered.body.id).toBe(first.body.id);

    const path = `/admin/users/${first.body.id}/keys`;
    const key = await send(path, 'order-key-1', '{"name":"a","allowedModels":["m1","m2"]}');
    expect(key.status, key.text).toBe(201);
    const again = await send(path, 'order-key-1', '{"allowedModels":["m1","m2"],"name":"a"}');
    expect(again.status, again.text).toBe(201);
    expect(again.body.id).toBe(key.body.id);
    // What is different stays different: the order of a list, a value.
    const swapped = await send(path, 'order-key-1', '{"allowedModels":["m2","m1"],"name":"a"}');
    expect(swapped.status).toBe(409);
    expectErrorShape(swapped.body, 'idempotency_conflict');
    const renamed = await send(path, 'order-key-1', '{"name":"b","allowedModels":["m1","m2"]}');
    expect(renamed.status).toBe(409);
    const { rows } = await database.pool.query('select 1 from api_keys where user_id = $1', [
      first.body.id,
    ]);
    expect(rows).toHaveLength(1);

    // Keys inside the list's objects too: a manual entry's postings.
    const posting = (account: string, amount: string, reversed: boolean) =>
      reversed
        ? `{"currency":"USDT","amount":"${amount}","account":"${account}"}`
        : `{"account":"${account}","amount":"${amount}","currency":"USDT"}`;
    const entry = (reversed: boolean) =>
      `{"description":"order test","postings":[${posting('assets:custody:tron:USDT:TXorder', '2', reversed)},${posting('equity:trading:USDT', '-2', reversed)}]}`;
    const posted = await call<{ entryId: string }>(service, 'POST', '/admin/entries', {
      token: ADMIN_TOKEN,
      headers: { 'idempotency-key': 'order-entry-1' },
      body: entry(false),
    });
    expect(posted.status, posted.text).toBe(201);
    const repeated = await call<{ entryId: string }>(service, 'POST', '/admin/entries', {
      token: ADMIN_TOKEN,
      headers: { 'idempotency-key': 'order-entry-1' },
      body: entry(true),
    });
    expect(repeated.status, repeated.text).toBe(201);
    expect(repeated.body.entryId).toBe(posted.body.entryId);
  });

  test('a claim recorded before the upgrade (hash of the body as sent) still replays its retry', async () => {
    const userId = await newUser(880_302);
    // Keys not in sorted order: the old hash is not the canonical one.
    const body = '{"spendLimitUsd":"5","name":"old"}';
    const path = `/admin/users/${userId}/keys`;
    // As the earlier version stored it: sha256 of "POST <path>\n" + JSON.stringify(body).
    const legacyHash = createHash('sha256')
      .update(`POST ${path}\n${JSON.stringify(JSON.parse(body))}`)
      .digest('hex');
    await database.pool.query(
      `insert into http_idempotency (key, method, path, request_hash, status, response)
       values ('admin:legacy-key-1', 'POST', $1, $2, 201, $3)`,
      [path, legacyHash, JSON.stringify({ id: 'kept-answer', key: null })],
    );
    const retried = await send(path, 'legacy-key-1', body);
    expect(retried.status, retried.text).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBe('true');
    expect(retried.body.id).toBe('kept-answer');
    const other = await send(path, 'legacy-key-1', '{"name":"other"}');
    expect(other.status).toBe(409);
    const { rows } = await database.pool.query('select 1 from api_keys where user_id = $1', [
      userId,
    ]);
    expect(rows).toHaveLength(0);
  });
});
