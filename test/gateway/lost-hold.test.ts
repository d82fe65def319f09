import OpenAI from 'openai';
import type pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';
import { expectedCost, gatewayConfig, MODELS, sdk } from './fixtures.js';

/**
 * The database goes away while a call's hold is being created, and stays away longer than the
 * ledger waits to learn whether that write committed (15 s): the call gets 503
 * `service_unavailable` and is never forwarded, and the hold may or may not exist. Once the
 * database is back, the gateway releases it in the background (or finds it was never created,
 * and makes sure it never is), without waiting for the hold's expiry (17 min). The service
 * reaches PostgreSQL through a TCP proxy the test breaks; the test reads the books directly.
 */

let database: TestDatabase;
let proxy: TcpProxy;
let stub: UpstreamStub;
let service: TestService;

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  service = await startTestService({
    databaseUrl: url.toString(),
    config: gatewayConfig(stub.url),
  });
});
afterAll(async () => {
  proxy?.swallowAnswers(false);
  proxy?.refuse(false);
  await service?.stop();
  await stub?.close();
  await proxy?.close();
  await database?.drop();
});

async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(`select (${sql})::int as n`, params);
  return rows[0]!.n;
}

/** The customer's holds by status and available balance, straight from the database. */
async function books(userId: string) {
  const { rows } = await database.pool.query<{ available: string; held: string }>(
    `select trim_scale(credits_posted - debits_posted - debits_pending)::text as available,
            trim_scale(debits_pending)::text as held
       from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  const { rows: holds } = await database.pool.query<{ status: string; n: number }>(
    `select h.status, count(*)::int as n from ledger_holds h
       join ledger_accounts a on a.id = h.debit_account_id
      where a.code = $1 group by h.status order by h.status`,
    [`liabilities:customers:${userId}`],
  );
  return { ...rows[0]!, holds: Object.fromEntries(holds.map((h) => [h.status, h.n])) };
}

/** What the key's spend limit has reserved for calls in flight. */
async function reserved(keyId: string): Promise<string> {
  const { rows } = await database.pool.query<{ reserved: string }>(
    `select trim_scale(reserved_usd)::text as reserved from api_keys where id = $1`,
    [keyId],
  );
  return rows[0]!.reserved;
}

/** The lost-hold counter by result, as /metrics shows it. */
async function lostHolds(): Promise<Record<string, number>> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  return Object.fromEntries(
    [...text.matchAll(/^lingxi_gateway_lost_holds_total\{result="(\w+)"\} (\d+)$/gm)].map((m) => [
      m[1]!,
      Number(m[2]),
    ]),
  );
}

/**
 * A user with 5 USD and one call served, so that the gateway and the ledger know the key,
 * its rate-limit slice and the user's accounts: the next call's only database write is its
 * hold, one statement. Returns what that first call cost.
 */
async function warmUser(telegramId: number, key?: Record<string, unknown>) {
  const user = await userWithKey(service, { telegramId, balance: '5', ...(key ? { key } : {}) });
  const client = sdk(service.url, user.apiKey, { timeout: 60_000 });
  const messages = [{ role: 'user' as const, content: 'warm [[tokens=3]]' }];
  await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: 3,
  });
  return { ...user, client, whole: new Decimal(5).sub(cost).toString() };
}

function expect503(error: unknown): void {
  expect(error).toBeInstanceOf(OpenAI.APIError);
  const apiError = error as InstanceType<typeof OpenAI.APIError>;
  expect([apiError.status, apiError.code, apiError.type]).toEqual([
    503,
    'service_unavailable',
    'api_error',
  ]);
}

test('a hold created whose answer was lost: the call gets 503, never forwarded; once the database is back the hold is voided and the balance is whole, long before its expiry', async () => {
  const { userId, client, whole } = await warmUser(4101);
  const forwarded = stub.requests.length;
  const before = await lostHolds();

  // The hold's write reaches PostgreSQL and commits; its answer never comes back.
  proxy.swallowAnswers(true);
  const call = client.chat.completions
    .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'lost [[tokens=3]]' }] })
    .catch((e: unknown) => e);
  await expect
    .poll(async () => (await books(userId)).holds['pending'] ?? 0, { timeout: 20_000 })
    .toBe(1);
  // Then the database is out of reach, longer than the ledger waits to learn the outcome.
  proxy.refuse(true);
  proxy.cut();
  proxy.swallowAnswers(false);

  expect503(await call);
  expect(stub.requests.length).toBe(forwarded); // never forwarded
  expect((await books(userId)).holds).toEqual({ pending: 1, posted: 1 }); // as it was lost

  proxy.refuse(false);
  await expect
    .poll(() => books(userId), { timeout: 30_000, interval: 50 })
    .toEqual({ available: whole, held: '0', holds: { posted: 1, voided: 1 } });
  expect(await lostHolds()).toEqual({ ...before, released: (before['released'] ?? 0) + 1 });
}, 90_000);

test('a hold whose write was cut while it waited on a lock: 503, never forwarded; once the database is back that write is fenced, so it never creates the hold, even when its lock is freed later', async () => {
  // A key with a spend limit: the call's reservation is taken before the hold waits.
  const { userId, keyId, client, whole } = await warmUser(4102, { spendLimitUsd: '4' });
  const forwarded = stub.requests.length;
  const before = await lostHolds();
  const neverCreated = (before['never_created'] ?? 0) + 1;
  const fencedBefore = await count(`select count(*) from ledger_batch_fences where abandoned`);
  const waitingOnLock = `select count(*) from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock'`;

  let blocker: pg.PoolClient | undefined = await database.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
      `liabilities:customers:${userId}`,
    ]);
    const call = client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'cut [[tokens=3]]' }] })
      .catch((e: unknown) => e);
    await expect.poll(() => count(waitingOnLock), { timeout: 20_000 }).toBe(1);
    // Its server process still waits on the lock, and would commit once it is freed.
    proxy.refuse(true);
    proxy.cut();

    expect503(await call);
    expect(stub.requests.length).toBe(forwarded);
    expect(await count(waitingOnLock)).toBe(1);
    expect(await reserved(keyId)).not.toBe('0'); // the call's reservation, still taken

    proxy.refuse(false);
    // The gateway finds no hold to release (and fences the write it lost).
    await expect
      .poll(async () => (await lostHolds())['never_created'] ?? 0, {
        timeout: 30_000,
        interval: 50,
      })
      .toBe(neverCreated);

    await blocker.query('commit');
    blocker.release();
    blocker = undefined;
    // The old server process goes ahead, and fails on its fence.
    await expect.poll(() => count(waitingOnLock), { timeout: 20_000 }).toBe(0);
    expect(await books(userId)).toEqual({ available: whole, held: '0', holds: { posted: 1 } });
    expect(await reserved(keyId)).toBe('0');
    expect(await count(`select count(*) from ledger_batch_fences where abandoned`)).toBe(
      fencedBefore + 1,
    );
    expect(await lostHolds()).toEqual({ ...before, never_created: neverCreated });
  } finally {
    if (blocker) {
      await blocker.query('rollback').catch(() => {});
      blocker.release();
    }
  }
}, 90_000);
