import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test, vi } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { runCli } from '../../src/cli/main.js';
import { chargedUsageTotal } from '../../src/privacy/chargedUsageTotal.js';
import { runRetention } from '../../src/privacy/retention.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig, sdk } from '../gateway/fixtures.js';
import { call, devSignIn } from './support.js';

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
const DAY_MS = 86_400_000;
const RETENTION = { retention: { usageLogDays: 90, requestMetaDays: 30 } };

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  service = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, { ...RETENTION, telegram: { devSignIn: true } }),
  });
});
afterAll(async () => {
  await service?.stop();
  await stub?.close();
  await database?.drop();
});

async function revenue(): Promise<Decimal> {
  const { rows } = await database.pool.query(
    `select coalesce(sum(credits_posted - debits_posted), 0)::text as total from ledger_accounts where code like 'revenue:usage%'`,
  );
  return new Decimal(rows[0].total);
}

/** Moves a usage row back in time by `days`. */
async function age(id: string, days: number, now: Date) {
  const finished = new Date(now.getTime() - days * DAY_MS);
  await database.pool.query(
    `update usage_records set started_at = $2::timestamptz - interval '1 second', finished_at = $2 where id = $1`,
    [id, finished],
  );
}

test('retention scrubs request metadata, rolls old usage into daily aggregates, keeps law 7', async () => {
  const db = service.runtime.database.db;
  const now = new Date();
  const alice = await userWithKey(service, { telegramId: 4001, balance: '10' });
  const bob = await userWithKey(service, { telegramId: 4002, balance: '10' });
  for (const [who, model, tokens] of [
    [alice, 'gpt-4o-mini', 5],
    [alice, 'gpt-4o-mini', 7],
    [alice, 'precise', 3],
    [alice, 'gpt-4o-mini', 2],
    [alice, 'gpt-4o-mini', 4],
    [bob, 'gpt-4o-mini', 6],
  ] as const) {
    await sdk(service.url, who.apiKey).chat.completions.create({
      model,
      messages: [{ role: 'user', content: `hi [[tokens=${tokens}]] [[cache-write=${tokens}]]` }],
    });
  }
  await service.http.services.work.drain(5000);
  const { rows: calls } = await database.pool.query<{ id: string; user_id: string }>(
    'select id, user_id from usage_records order by id',
  );
  expect(calls).toHaveLength(6);
  const ids = calls.map((c) => c.id);
  // alice: two calls 100 days ago (same UTC day), one 'precise' 100 days ago, one 45 days ago, one today.
  for (const id of ids.slice(0, 3)) await age(id, 100, now);
  await age(ids[3]!, 45, now);
  await age(ids[5]!, 95, now); // bob
  // A failed call 100 days ago, nothing charged.
  await database.pool.query(
    `insert into usage_records (request_id, key_id, user_id, endpoint, model, started_at, finished_at, latency_ms, http_status, outcome, client_ip, user_agent)
     values ('req_failed_old', $1, $2, 'chat.completions', 'gpt-4o-mini', $3, $3, 10, 502, 'upstream_error', '10.0.0.1', 'curl/8')`,
    [alice.keyId, alice.userId, new Date(now.getTime() - 100 * DAY_MS)],
  );

  // A charged call is filed under its ledger entry's day (where its revenue stays; here the
  // entries are today's, the rows aged), a call without an entry under the day it finished.
  const old = await database.pool.query(
    `select u.user_id, u.model, count(*)::int as calls, sum(u.prompt_tokens)::text as prompt,
            sum(u.cache_write_tokens)::text as cache_write, sum(u.completion_tokens)::text as completion, sum(u.cost_usd)::text as cost,
            to_char((coalesce(e.created_at, u.finished_at) at time zone 'UTC')::date, 'YYYY-MM-DD') as day
       from usage_records u left join ledger_entries e on e.id = u.entry_id
      where u.finished_at < $1 group by 1, 2, 8 order by 1, 2, 8`,
    [new Date(now.getTime() - 90 * DAY_MS)],
  );
  const revenueBefore = await revenue();
  expect((await chargedUsageTotal(db)).eq(revenueBefore)).toBe(true);
  const ledgerBefore = await ledgerRowCounts(database.pool);

  const result = await runRetention(db, service.runtime.config, now);
  expect(result).toMatchObject({
    // Every row older than 30 days: the five about to be rolled up and the one 45 days old.
    scrubbedRows: 6,
    rolledUpRows: 5,
    complete: true,
  });

  // Rows older than 90 days are gone; the one 45 days ago remains without IP and user agent;
  // today's keeps them.
  const { rows: kept } = await database.pool.query(
    'select id, client_ip, user_agent from usage_records order by id',
  );
  expect(kept.map((r) => r.id)).toEqual([ids[3], ids[4]]);
  expect(kept[0]).toMatchObject({ client_ip: null, user_agent: null });
  expect(kept[1].client_ip).toMatch(/127\.0\.0\.1/);
  expect(kept[1].user_agent).not.toBeNull();

  // The aggregates carry exactly what the deleted rows held.
  const { rows: daily } = await database.pool.query(
    `select user_id, model, calls::int, prompt_tokens::text as prompt, cache_write_tokens::text as cache_write,
            completion_tokens::text as completion,
            cost_usd::text as cost, to_char(day, 'YYYY-MM-DD') as day, outcomes from usage_daily order by 1, 2, 8`,
  );
  expect(daily.map(({ outcomes: _o, ...rest }) => rest)).toEqual(old.rows);
  expect(old.rows.map((r) => r.cache_write)).toContain('12');
  const aliceMini = daily.filter((d) => d.user_id === alice.userId && d.model === 'gpt-4o-mini');
  expect(aliceMini.map((d) => d.outcomes)).toEqual([{ upstream_error: 1 }, { ok: 2 }]);

  // Law 7: usage rows plus aggregates still equal the revenue postings; the ledger is untouched.
  expect((await chargedUsageTotal(db)).toString()).toBe(revenueBefore.toString());
  expect(await revenue()).toEqual(revenueBefore);
  expect(await ledgerRowCounts(database.pool)).toEqual(ledgerBefore);
  expect(await service.runtime.ledger.checkBalances()).toEqual([]);

  // A second run changes nothing.
  const again = await runRetention(db, service.runtime.config, now);
  expect(again).toMatchObject({ scrubbedRows: 0, rolledUpRows: 0, aggregatesTouched: 0 });

  // A late row for a day already rolled up is added to its aggregate.
  await database.pool.query(
    `insert into usage_records (request_id, user_id, endpoint, model, started_at, finished_at, latency_ms, http_status, outcome)
     values ('req_late', $1, 'chat.completions', 'gpt-4o-mini', $2, $2, 10, 429, 'rate_limited')`,
    [alice.userId, new Date(now.getTime() - 100 * DAY_MS)],
  );
  const late = await runRetention(db, service.runtime.config, now);
  expect(late).toMatchObject({ rolledUpRows: 1, aggregatesTouched: 1 });
  const { rows: merged } = await database.pool.query(
    `select calls::int, outcomes from usage_daily where user_id = $1 and model = 'gpt-4o-mini' order by day`,
    [alice.userId],
  );
  expect(merged[0]).toEqual({ calls: 2, outcomes: { upstream_error: 1, rate_limited: 1 } });

  // The aggregates cannot be deleted.
  await expect(database.pool.query('delete from usage_daily')).rejects.toThrow(/append-only/);

  // The user's export carries the aggregates.
  const { token } = await devSignIn(service, 4001);
  const exported = await call<{
    usage: unknown[];
    usageDaily: Array<{ day: string; calls: string }>;
  }>(service, 'GET', '/api/me/export', { token });
  expect(exported.body.usage).toHaveLength(2);
  expect(exported.body.usageDaily.map((d) => d.calls).sort()).toEqual(['1', '2', '2']);
});

test('ended sessions, expired Telegram login hashes, old Idempotency-Key records, released spend-limit reservations and idle rate-limit buckets are deleted', async () => {
  const db = service.runtime.database.db;
  const now = new Date();
  const live = await devSignIn(service, 4101);
  const ended = await devSignIn(service, 4101);
  await database.pool.query(
    `update sessions set created_at = now() - interval '60 days', expires_at = now() - interval '31 days' where id = $1`,
    [ended.sessionId],
  );
  await database.pool.query(
    `insert into telegram_login_replays (payload_hash, expires_at) values ('aa', now() - interval '1 minute'), ('bb', now() + interval '1 hour')`,
  );
  await database.pool.query(
    `insert into http_idempotency (key, method, path, request_hash, status, response, created_at) values
       ('old-done', 'POST', '/admin/users', 'h', 200, '{}', now() - interval '31 days'),
       ('old-running', 'POST', '/admin/users', 'h', null, null, now() - interval '31 days'),
       ('recent', 'POST', '/admin/users', 'h', 200, '{}', now() - interval '1 day'),
       ('running', 'POST', '/admin/users', 'h', null, null, now())`,
  );
  const limited = await userWithKey(service, { telegramId: 4102, key: { spendLimitUsd: '5' } });
  await database.pool.query(
    `insert into api_key_reservations (id, key_id, amount, expires_at, created_at, released_at, charged_usd) values
       (gen_random_uuid(), $1, 1, now() - interval '31 days', now() - interval '32 days', now() - interval '31 days', 0.5),
       (gen_random_uuid(), $1, 1, now() + interval '1 hour', now(), now(), 0.2),
       (gen_random_uuid(), $1, 1, now() + interval '1 hour', now(), null, null)`,
    [limited.keyId],
  );
  const idle = '00000000-0000-7000-8000-0000000000a1';
  const busy = '00000000-0000-7000-8000-0000000000a2';
  await database.pool.query(
    `insert into rate_limit_buckets (key_id, requests, tokens, updated_at) values
       ($1, 3, 300, now() - interval '61 minutes'), ($2, 3, 300, now() - interval '59 minutes')`,
    [idle, busy],
  );
  const result = await runRetention(db, service.runtime.config, now);
  expect(result).toMatchObject({
    prunedSessions: 1,
    prunedLoginReplays: 1,
    // The answered one and the one abandoned by a process that died (no heartbeat for 31 days).
    prunedIdempotencyKeys: 2,
    prunedKeyReservations: 1,
    prunedRateLimitBuckets: 1,
  });
  const { rows: buckets } = await database.pool.query<{ key_id: string }>(
    'select key_id from rate_limit_buckets where key_id = any($1::uuid[])',
    [[idle, busy]],
  );
  expect(buckets.map((b) => b.key_id)).toEqual([busy]);
  const { rows: reservations } = await database.pool.query(
    'select charged_usd::text as charged from api_key_reservations where key_id = $1 order by created_at, charged_usd',
    [limited.keyId],
  );
  expect(reservations.map((r) => r.charged)).toEqual(['0.2', null]);
  const { rows: keys } = await database.pool.query('select key from http_idempotency order by key');
  expect(keys.map((r) => r.key)).toEqual(['recent', 'running']);
  const { rows } = await database.pool.query('select id from sessions where user_id = $1', [
    live.userId,
  ]);
  expect(rows.map((r) => r.id)).toEqual([live.sessionId]);
  const { rows: replays } = await database.pool.query(
    'select payload_hash from telegram_login_replays',
  );
  expect(replays).toEqual([{ payload_hash: 'bb' }]);
});

test('`lingxi retention run` runs the same job', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'lingxi-retention-')), 'lingxi.config.json');
  writeFileSync(file, JSON.stringify({ database: { url: database.url }, ...RETENTION }));
  let stdout = '';
  let stderr = '';
  const io = {
    stdout: (t: string) => void (stdout += t),
    stderr: (t: string) => void (stderr += t),
  };
  const code = await runCli(
    [
      'retention',
      'run',
      '--json',
      '--now',
      new Date(Date.now() + 400 * DAY_MS).toISOString(),
      '--config',
      file,
    ],
    io,
  );
  expect(stderr).toBe('');
  expect(code).toBe(0);
  const result = JSON.parse(stdout) as Record<string, unknown>;
  expect(result).toMatchObject({ rolledUpRows: 2, complete: true });
  expect(
    (await database.pool.query('select count(*)::int as n from usage_records')).rows[0].n,
  ).toBe(0);
  expect((await chargedUsageTotal(service.runtime.database.db)).eq(await revenue())).toBe(true);

  const bad = await runCli(['retention', 'run', '--now', 'soon', '--config', file], {
    stdout: () => {},
    stderr: () => {},
  });
  expect(bad).toBe(2);
});

test('a `now` in the future moves the retention cutoffs, but leaves live sessions, login hashes, Idempotency-Key records and rate-limit buckets alone', async () => {
  const live = await devSignIn(service, 4103);
  await database.pool.query(
    `insert into telegram_login_replays (payload_hash, expires_at) values ('fresh', now() + interval '1 hour')`,
  );
  await database.pool.query(
    `insert into http_idempotency (key, method, path, request_hash, status, response, created_at)
       values ('yesterday', 'POST', '/admin/users', 'h', 200, '{}', now() - interval '1 day')`,
  );
  const inUse = '00000000-0000-7000-8000-0000000000a3';
  await database.pool.query(
    `insert into rate_limit_buckets (key_id, requests, tokens, updated_at) values ($1, 3, 300, now())`,
    [inUse],
  );
  const future = new Date(Date.now() + 400 * DAY_MS);
  const result = await runRetention(service.runtime.database.db, service.runtime.config, future);
  expect(result.usageLogCutoff).toBe(new Date(future.getTime() - 90 * DAY_MS).toISOString());
  const still = async (query: string, params: unknown[] = []) =>
    (await database.pool.query(query, params)).rows.length;
  expect(await still('select 1 from sessions where id = $1', [live.sessionId])).toBe(1);
  expect(await still(`select 1 from telegram_login_replays where payload_hash = 'fresh'`)).toBe(1);
  expect(await still(`select 1 from http_idempotency where key = 'yesterday'`)).toBe(1);
  expect(await still('select 1 from rate_limit_buckets where key_id = $1', [inUse])).toBe(1);
});

test('`lingxi retention run --now <future>` on a machine whose clock runs ahead of the database keeps rate-limit buckets in use and live login hashes', async () => {
  const inUse = '00000000-0000-7000-8000-0000000000a4';
  // Touched a minute ago and still refilling, by the database's clock.
  await database.pool.query(
    `insert into rate_limit_buckets (key_id, requests, tokens, updated_at)
       values ($1, 0, 0, now() - interval '1 minute')`,
    [inUse],
  );
  await database.pool.query(
    `insert into telegram_login_replays (payload_hash, expires_at) values ('ahead', now() + interval '1 hour')`,
  );
  const file = join(mkdtempSync(join(tmpdir(), 'lingxi-retention-')), 'lingxi.config.json');
  writeFileSync(file, JSON.stringify({ database: { url: database.url }, ...RETENTION }));
  let stdout = '';
  let stderr = '';
  // The operator's machine runs two hours ahead of the database server.
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 2 * 3_600_000 });
  try {
    const code = await runCli(
      [
        'retention',
        'run',
        '--json',
        '--now',
        new Date(Date.now() + 400 * DAY_MS).toISOString(),
        '--config',
        file,
      ],
      { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) },
    );
    expect(stderr).toBe('');
    expect(code).toBe(0);
  } finally {
    vi.useRealTimers();
  }
  expect(JSON.parse(stdout)).toMatchObject({ complete: true });
  const { rows: bucket } = await database.pool.query(
    'select requests from rate_limit_buckets where key_id = $1',
    [inUse],
  );
  // Still there: the key's next call still finds its budget spent, not a full one.
  expect(bucket).toEqual([{ requests: 0 }]);
  const { rows: replay } = await database.pool.query(
    `select 1 from telegram_login_replays where payload_hash = 'ahead'`,
  );
  expect(replay).toHaveLength(1);
});
