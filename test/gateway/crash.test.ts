import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import type pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal, PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { TEST_CURRENCIES } from '../support/ledger.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { ADMIN_TOKEN, userWithKey } from '../support/service.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, gatewayConfig, MODELS, sdk } from './fixtures.js';

/**
 * `lingxi serve` killed with SIGKILL while calls are in flight, as a crash or an OOM kill
 * would: calls that completed are charged exactly once, calls in flight hold their money
 * only until their holds expire (released by `lingxi cron`, nothing charged), the key's
 * spend-limit reservations go with them, and a new `lingxi serve` works at once.
 *
 * Holds are short here through configuration only: a hold lasts the provider's `timeoutMs`
 * + `gateway.maxCallDurationMs` + `gateway.holdGraceMs` = 3 + 3 + 1 s.
 */

const TIMEOUT_MS = 3000;
const MAX_CALL_MS = 3000;
const GRACE_MS = 1000;
const HOLD_MS = TIMEOUT_MS + MAX_CALL_MS + GRACE_MS;
const FUNDED = '5';
const SPEND_LIMIT = '1';

let database: TestDatabase;
let stub: UpstreamStub;
let ledger: PostgresLedger;
let dir: string;
let configFile: string;
const processes: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  ledger = new PostgresLedger({ pool: database.pool, currencies: TEST_CURRENCIES });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-crash-'));
  configFile = join(dir, 'lingxi.config.json');
  const base = gatewayConfig(stub.url);
  writeFileSync(
    configFile,
    JSON.stringify({
      ...base,
      http: { host: '127.0.0.1', port: 0 },
      database: { url: database.url, poolSize: 5 },
      adminToken: ADMIN_TOKEN,
      log: { level: 'info' },
      providers: base.providers!.map((p) => ({ ...p, timeoutMs: TIMEOUT_MS })),
      gateway: { maxCallDurationMs: MAX_CALL_MS, holdGraceMs: GRACE_MS },
      // Hold expiry every second; nothing else runs during the test.
      cron: { expireHolds: '* * * * * *', reconcile: '0 0 1 1 *', seal: '0 0 1 1 *' },
    }),
  );
});
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => p.exited));
  await stub?.close();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function lingxi(role: 'serve' | 'cron'): LingxiProcess {
  const started = startLingxi([role, '--config', configFile]);
  processes.push(started);
  return started;
}

async function serve(): Promise<LingxiProcess & { baseUrl: string }> {
  const started = lingxi('serve');
  return Object.assign(started, { baseUrl: await started.url() });
}

async function sigkill(p: LingxiProcess): Promise<void> {
  p.child.kill('SIGKILL');
  expect(await p.exited).toEqual({ code: null, signal: 'SIGKILL' });
}

async function until(
  what: string,
  condition: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

type Message = { role: 'user'; content: string };

/** A call that runs to its end: its request id and what it must cost. */
interface Completed {
  requestId: string;
  cost: Decimal;
}

async function completeJson(client: OpenAI, content: string, tokens: number): Promise<Completed> {
  const messages: Message[] = [{ role: 'user', content }];
  const { data, response } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages })
    .withResponse();
  expect(data.usage?.completion_tokens).toBe(tokens);
  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: tokens,
  });
  expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
  return { requestId: response.headers.get('x-request-id')!, cost };
}

async function completeStream(client: OpenAI, content: string, tokens: number): Promise<Completed> {
  const messages: Message[] = [{ role: 'user', content }];
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'gpt-4o-mini', messages, stream: true })
    .withResponse();
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  expect(text).toBe(Array.from({ length: tokens }, (_, i) => `tok${i} `).join(''));
  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: tokens,
  });
  return { requestId: response.headers.get('x-request-id')!, cost };
}

const sum = (values: Decimal[]) => values.reduce((a, b) => a.add(b), new Decimal(0));

/** The user's money, usage and holds, and the key's spend, straight from the database. */
async function books(pool: pg.Pool, userId: string, keyId: string) {
  const balance = await ledger.getBalance(`liabilities:customers:${userId}`);
  const usage = await pool.query<{ request_id: string; cost: string }>(
    `select request_id, cost_usd::text as cost from usage_records where user_id = $1 order by id`,
    [userId],
  );
  const holds = await pool.query<{
    status: string;
    amount: string;
    early: boolean;
  }>(
    `select h.status, h.amount::text as amount, (h.resolved_at < h.expires_at) as early
       from ledger_holds h join ledger_accounts a on a.id = h.debit_account_id
      where a.code = $1 order by h.id`,
    [`liabilities:customers:${userId}`],
  );
  const key = await pool.query<{ spent: string; reserved: string }>(
    `select spent_usd::text as spent, reserved_usd::text as reserved from api_keys where id = $1`,
    [keyId],
  );
  const reservations = await pool.query<{
    amount: string;
    released: boolean;
    charged: string | null;
  }>(
    `select amount::text as amount, released_at is not null as released, charged_usd::text as charged
       from api_key_reservations where key_id = $1 order by created_at`,
    [keyId],
  );
  return {
    balance,
    usage: usage.rows,
    holds: holds.rows,
    key: { spent: new Decimal(key.rows[0]!.spent), reserved: new Decimal(key.rows[0]!.reserved) },
    reservations: reservations.rows,
  };
}

/** Law 7 over the whole database: the usage rows' costs equal the revenue postings. */
async function usageAndRevenue(): Promise<{ usage: string; revenue: string }> {
  const { rows } = await database.pool.query<{ usage: string }>(
    `select coalesce(sum(cost_usd), 0)::text as usage from usage_records`,
  );
  const revenue = await ledger.getBalance('revenue:usage');
  return { usage: new Decimal(rows[0]!.usage).toString(), revenue: revenue.posted.toString() };
}

async function ledgerIsWhole(): Promise<void> {
  expect(await ledger.checkBalances()).toEqual([]);
  const { totals } = await ledger.trialBalance();
  expect(totals.length).toBeGreaterThan(0);
  for (const total of totals) expect(total.net.toString()).toBe('0');
}

test('SIGKILL with calls in flight: completed calls charged once, in-flight holds and reservations released at expiry, a new serve works', async () => {
  const first = await serve();
  const { userId, keyId, apiKey } = await userWithKey(
    { url: first.baseUrl },
    { telegramId: 9101, balance: FUNDED, key: { spendLimitUsd: SPEND_LIMIT } },
  );
  const client = sdk(first.baseUrl, apiKey, { timeout: 30_000 });

  // Calls that complete before the kill, streamed and not.
  const completed: Completed[] = [
    await completeJson(client, 'one [[tokens=7]]', 7),
    await completeStream(client, 'two [[tokens=5]] [[delay=20]]', 5),
  ];
  const concurrent = await Promise.all([
    completeJson(client, 'three [[tokens=11]] [[delay=100]]', 11),
    completeStream(client, 'four [[tokens=9]]', 9),
  ]);
  completed.push(...concurrent);

  // Calls in flight at the kill: upstream stalls before answering, streams that stall
  // mid-answer (the client has part of it), and an answer upstream takes its time with.
  const before = stub.requests.length;
  let firstChunks = 0;
  const inFlight = [
    client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'stalled json [[stall]]' }],
    }),
    client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'slow json [[tokens=3]] [[delay=2500]]' }],
    }),
    (async () => {
      const stream = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'stalled stream [[stall]]' }],
        stream: true,
      });
      for await (const chunk of stream) void chunk;
    })(),
    (async () => {
      const stream = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'cut stream [[tokens=50]] [[stall-after=4]]' }],
        stream: true,
      });
      let seen = false;
      for await (const chunk of stream) {
        void chunk;
        if (!seen) firstChunks += 1;
        seen = true;
      }
    })(),
  ].map((call) =>
    (call as Promise<unknown>).then(
      () => 'completed',
      (error: unknown) => error,
    ),
  );
  await until(
    'every in-flight call to reach upstream',
    () => stub.requests.length - before === inFlight.length && firstChunks === 1,
  );
  const spentBefore = sum(completed.map((c) => c.cost));
  const inFlightHolds = (await books(database.pool, userId, keyId)).holds.filter(
    (h) => h.status === 'pending',
  );
  expect(inFlightHolds).toHaveLength(inFlight.length);

  await sigkill(first);
  const killedAt = Date.now();

  // The clients see their connection go: an error, no status, no answer.
  for (const outcome of await Promise.all(inFlight)) {
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as { status?: unknown }).status).toBeUndefined();
  }

  // Before expiry: completed calls charged once each, in-flight money held, not charged.
  const held = sum(inFlightHolds.map((h) => new Decimal(h.amount)));
  let now = await books(database.pool, userId, keyId);
  expect(now.usage.map((u) => u.request_id).sort()).toEqual(
    completed.map((c) => c.requestId).sort(),
  );
  for (const call of completed)
    expect(now.usage.find((u) => u.request_id === call.requestId)?.cost).toBe(call.cost.toString());
  expect(now.balance.posted.toString()).toBe(new Decimal(FUNDED).sub(spentBefore).toString());
  expect(now.balance.held.toString()).toBe(held.toString());
  expect(now.key.spent.toString()).toBe(spentBefore.toString());
  expect(now.key.reserved.toString()).toBe(held.toString());
  expect(await usageAndRevenue()).toEqual({
    usage: spentBefore.toString(),
    revenue: spentBefore.toString(),
  });

  // Hold expiry as production runs it: a `lingxi cron` process (its expire-holds job each second).
  const cron = lingxi('cron');
  await until(
    'the in-flight holds to expire',
    async () =>
      (await books(database.pool, userId, keyId)).holds.every((h) => h.status !== 'pending'),
    HOLD_MS + 15_000,
  );
  expect(Date.now() - killedAt).toBeGreaterThan(HOLD_MS - 2000);
  await until('the reservations to be released', async () =>
    (await books(database.pool, userId, keyId)).reservations.every((r) => r.released),
  );
  await sigkill(cron);

  now = await books(database.pool, userId, keyId);
  // Each in-flight hold expired, none before its time; nothing more was charged.
  expect(now.holds.filter((h) => h.status === 'expired')).toHaveLength(inFlight.length);
  expect(now.holds.filter((h) => h.status === 'posted')).toHaveLength(completed.length);
  expect(now.holds.some((h) => h.status === 'expired' && h.early)).toBe(false);
  expect(now.usage).toHaveLength(completed.length);
  expect(now.balance.available.toString()).toBe(new Decimal(FUNDED).sub(spentBefore).toString());
  expect(now.balance.held.toString()).toBe('0');
  expect(now.key.spent.toString()).toBe(spentBefore.toString());
  expect(now.key.reserved.toString()).toBe('0');
  expect(sum(now.reservations.map((r) => new Decimal(r.charged ?? 'NaN'))).toString()).toBe(
    spentBefore.toString(),
  );
  expect(await usageAndRevenue()).toEqual({
    usage: spentBefore.toString(),
    revenue: spentBefore.toString(),
  });
  await ledgerIsWhole();

  // A new serve: calls work, each charged once, nothing charged again for the old ones.
  const second = await serve();
  const again = sdk(second.baseUrl, apiKey);
  const after = [
    await completeJson(again, 'five [[tokens=4]]', 4),
    await completeStream(again, 'six [[tokens=6]]', 6),
  ];
  const spent = spentBefore.add(sum(after.map((c) => c.cost)));
  now = await books(database.pool, userId, keyId);
  expect(now.usage.map((u) => u.request_id).sort()).toEqual(
    [...completed, ...after].map((c) => c.requestId).sort(),
  );
  expect(now.balance.available.toString()).toBe(new Decimal(FUNDED).sub(spent).toString());
  expect(now.balance.held.toString()).toBe('0');
  expect(now.key.spent.toString()).toBe(spent.toString());
  expect(now.key.reserved.toString()).toBe('0');
  expect(await usageAndRevenue()).toEqual({ usage: spent.toString(), revenue: spent.toString() });
  await ledgerIsWhole();
  await sigkill(second);
  // Three process starts and a 7 s hold expiry: about 50 s on a loaded 2-core machine.
}, 180_000);

test('SIGKILL while a finished stream is being settled: the client never saw its end, so it is not a completed call', async () => {
  const served = await serve();
  const { userId, apiKey } = await userWithKey(
    { url: served.baseUrl },
    { telegramId: 9102, balance: FUNDED },
  );
  const stream = await sdk(served.baseUrl, apiKey, { timeout: 30_000 }).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'seven [[tokens=5]] [[delay=100]]' }],
    stream: true,
  });
  const iterator = stream[Symbol.asyncIterator]();
  await iterator.next(); // the hold is taken, the stream under way
  // The settlement will wait on the customer's account row, held by this transaction.
  const lock = await database.pool.connect();
  await lock.query('begin');
  await lock.query(`select id from ledger_accounts where code = $1 for update`, [
    `liabilities:customers:${userId}`,
  ]);
  const ended = (async () => {
    for (;;) if ((await iterator.next()).done) return 'saw the end';
  })().catch(() => 'cut');
  await until('the settlement to wait on the lock', async () => {
    const { rows } = await database.pool.query(
      `select 1 from pg_stat_activity where datname = $1 and wait_event_type = 'Lock'`,
      [database.name],
    );
    return rows.length > 0;
  });
  // Proof of absence, so a fixed wait: while the settlement waits, the client must not see
  // the stream's end.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await sigkill(served);
  // The client saw no end: the process died while the settlement waited.
  expect(await ended).toBe('cut');
  // The dead process's settlement statement is still on the server, waiting on the lock
  // (PostgreSQL does not notice a client gone while a statement waits). Released, it runs
  // and either commits whole (the tokens were delivered; the provider bills them) or not at
  // all: never half, never twice.
  await lock.query('rollback');
  lock.release();
  await until('the dead settlement to finish', async () => {
    const { rows } = await database.pool.query(
      `select 1 from pg_stat_activity
        where datname = $1 and pid <> pg_backend_pid() and state <> 'idle'`,
      [database.name],
    );
    return rows.length === 0;
  });
  const { rows } = await database.pool.query<{ cost: string; outcome: string }>(
    `select cost_usd::text as cost, outcome from usage_records where user_id = $1`,
    [userId],
  );
  expect(rows.length).toBeLessThanOrEqual(1);
  const balance = await ledger.getBalance(`liabilities:customers:${userId}`);
  const charged = rows.length === 1 ? new Decimal(rows[0]!.cost) : new Decimal(0);
  if (rows.length === 1) expect(rows[0]!.outcome).toBe('ok');
  // Charged exactly what its usage row says (or nothing), and its hold still counts as
  // held only when the settlement did not commit (then it expires like any orphan).
  expect(new Decimal(FUNDED).minus(balance.posted).toString()).toBe(charged.toString());
  const totals = await usageAndRevenue();
  expect(totals.usage).toBe(totals.revenue);
  await ledgerIsWhole();
}, 120_000);
