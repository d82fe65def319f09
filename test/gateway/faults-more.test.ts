import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal, PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { TEST_CURRENCIES } from '../support/ledger.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { ADMIN_TOKEN, userWithKey } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig, sdk } from './fixtures.js';

/**
 * `lingxi serve` in a child process, stopped while many calls are under way: with SIGKILL
 * (then a new serve and `lingxi cron` clean up), and with SIGTERM (the process itself must
 * settle or release every hold it took before it exits). Either way, after the dust settles:
 * no hold left pending, each hold resolved once, and the customer's balance, the usage rows
 * and the revenue postings agree to the last digit.
 */

const TIMEOUT_MS = 4000;
const MAX_CALL_MS = 4000;
const GRACE_MS = 1000;
const HOLD_MS = TIMEOUT_MS + MAX_CALL_MS + GRACE_MS;
const FUNDED = '50';

let database: TestDatabase;
let stub: UpstreamStub;
let ledger: PostgresLedger;
let dir: string;
const processes: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  ledger = new PostgresLedger({ pool: database.pool, currencies: TEST_CURRENCIES });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-faults-more-'));
});
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGKILL');
  await Promise.all(processes.map((p) => p.exited));
  await stub?.close();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function configFile(
  name: string,
  http: Record<string, unknown> = {},
  timeoutMs = TIMEOUT_MS,
): string {
  const file = join(dir, `${name}.json`);
  const base = gatewayConfig(stub.url);
  writeFileSync(
    file,
    JSON.stringify({
      ...base,
      http: { host: '127.0.0.1', port: 0, ...http },
      database: { url: database.url, poolSize: 5 },
      adminToken: ADMIN_TOKEN,
      log: { level: 'info' },
      providers: base.providers!.map((p) => ({ ...p, timeoutMs })),
      gateway: { maxCallDurationMs: Math.max(MAX_CALL_MS, timeoutMs), holdGraceMs: GRACE_MS },
      cron: { expireHolds: '* * * * * *', reconcile: '0 0 1 1 *', seal: '0 0 1 1 *' },
    }),
  );
  return file;
}

function lingxi(args: string[]): LingxiProcess {
  const started = startLingxi(args);
  processes.push(started);
  return started;
}

async function serve(config: string): Promise<LingxiProcess & { baseUrl: string }> {
  const started = lingxi(['serve', '--config', config]);
  return Object.assign(started, { baseUrl: await started.url() });
}

async function until(
  what: string,
  condition: () => Promise<boolean> | boolean,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const message = (content: string) => [{ role: 'user' as const, content }];

/** Reads a stream to its end; resolves with the text, rejects when it is cut. */
async function readStream(client: OpenAI, content: string, onChunk?: () => void) {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: message(content),
    stream: true,
  });
  let text = '';
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    onChunk?.();
  }
  return text;
}

/**
 * The user's holds, usage rows and balance, and the whole book's law 7, straight from the
 * database; fails the test on anything that does not add up.
 */
async function expectBooksSettled(userId: string) {
  const code = `liabilities:customers:${userId}`;
  const { rows: holds } = await database.pool.query<{
    id: string;
    status: string;
    posted: string | null;
  }>(
    `select h.id, h.status, h.posted_amount::text as posted
       from ledger_holds h join ledger_accounts a on a.id = h.debit_account_id
      where a.code = $1`,
    [code],
  );
  const { rows: usage } = await database.pool.query<{
    hold_id: string | null;
    cost: string;
    outcome: string;
  }>(`select hold_id, cost_usd::text as cost, outcome from usage_records where user_id = $1`, [
    userId,
  ]);
  expect(holds.filter((h) => h.status === 'pending')).toEqual([]);
  // One usage row per hold resolved by a settlement or a release, each charging what its
  // hold posted; none for a hold that expired (nobody resolved it).
  const byHold = new Map(usage.map((u) => [u.hold_id, u]));
  expect(usage).toHaveLength(byHold.size);
  for (const hold of holds) {
    const row = byHold.get(hold.id);
    if (hold.status === 'expired') expect(row).toBeUndefined();
    else expect(new Decimal(row!.cost).toString()).toBe(new Decimal(hold.posted ?? 0).toString());
  }
  const charged = usage.reduce((sum, u) => sum.add(u.cost), new Decimal(0));
  const balance = await ledger.getBalance(code);
  expect(balance.held.toString()).toBe('0');
  expect(balance.posted.toString()).toBe(new Decimal(FUNDED).sub(charged).toString());
  const { rows } = await database.pool.query<{ usage: string }>(
    `select coalesce(sum(cost_usd), 0)::text as usage from usage_records`,
  );
  expect(new Decimal(rows[0]!.usage).toString()).toBe(
    (await ledger.getBalance('revenue:usage')).posted.toString(),
  );
  expect(await ledger.checkBalances()).toEqual([]);
  return { holds, usage, charged };
}

test('SIGTERM during a burst of calls: the process settles or releases every hold it took before it exits', async () => {
  // A grace shorter than the slowest calls: some are cut at its end.
  const served = await serve(configFile('sigterm', { shutdownGraceMs: 1500 }));
  const { userId, apiKey } = await userWithKey(
    { url: served.baseUrl },
    { telegramId: 9301, balance: FUNDED },
  );
  const client = sdk(served.baseUrl, apiKey, { timeout: 30_000 });
  const before = stub.requests.length;
  let streaming = 0;
  const calls = [
    // Finish within the grace.
    ...Array.from({ length: 4 }, (_, i) =>
      client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: message(`quick json ${i} [[tokens=5]] [[delay=300]]`),
      }),
    ),
    ...Array.from({ length: 4 }, (_, i) =>
      readStream(client, `quick stream ${i} [[tokens=6]] [[delay=100]]`, () => (streaming += 1)),
    ),
    // Still running when the grace ends: answers upstream gives after it, or never.
    ...Array.from({ length: 3 }, (_, i) =>
      client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: message(`slow json ${i} [[tokens=5]] [[delay=3000]]`),
      }),
    ),
    client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: message('stalled json [[stall]]'),
    }),
    readStream(client, 'stalled stream [[tokens=40]] [[stall-after=3]]', () => (streaming += 1)),
    readStream(client, 'slow stream [[tokens=40]] [[delay=400]]', () => (streaming += 1)),
  ].map((call: Promise<unknown>) =>
    call.then(
      (value): { value?: unknown; error?: unknown } => ({ value }),
      (error: unknown) => ({ error }),
    ),
  );
  await until(
    'every call to reach upstream, the streams under way',
    () => stub.requests.length - before === calls.length && streaming >= 6,
  );
  served.child.kill('SIGTERM');
  const outcomes = await Promise.all(calls);
  expect(await served.exited).toEqual({ code: 0, signal: null });
  // The quick calls completed; the others were cut.
  expect(outcomes.slice(0, 8).every((o) => 'value' in o)).toBe(true);

  const { holds, usage } = await expectBooksSettled(userId);
  expect(holds).toHaveLength(calls.length);
  // Resolved by the process itself, not left to expire.
  expect(holds.filter((h) => h.status === 'expired')).toEqual([]);
  expect(usage).toHaveLength(calls.length);
  // The quick calls charged as answered; the cut JSON calls (no answer) released, nothing
  // charged; the cut streams charged for what their clients received.
  const ok = usage.filter((u) => u.outcome === 'ok');
  const cut = usage.filter((u) => u.outcome === 'client_disconnected');
  expect([ok.length, cut.length]).toEqual([8, 6]);
  expect(ok.every((u) => new Decimal(u.cost).gt(0))).toBe(true);
  expect(cut.map((u) => new Decimal(u.cost).gt(0)).filter(Boolean)).toHaveLength(2);
  expect(holds.filter((h) => h.status === 'voided')).toHaveLength(4);
}, 120_000);

test('SIGKILL with many streams mid-answer: after a restart and hold expiry, each hold expired or resolved once, nothing charged twice', async () => {
  const config = configFile('sigkill');
  const first = await serve(config);
  const { userId, apiKey } = await userWithKey(
    { url: first.baseUrl },
    { telegramId: 9302, balance: FUNDED },
  );
  const client = sdk(first.baseUrl, apiKey, { timeout: 30_000 });
  // Calls that complete before the kill.
  await Promise.all([
    readStream(client, 'done stream [[tokens=5]]'),
    client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: message('done [[tokens=4]]'),
    }),
  ]);
  const STREAMS = 8;
  const before = stub.requests.length;
  const receiving = new Set<number>();
  const cut = Array.from({ length: STREAMS }, (_, i) =>
    readStream(client, `stream ${i} [[tokens=60]] [[delay=150]]`, () => receiving.add(i)).then(
      () => 'completed',
      (error: unknown) => error,
    ),
  );
  await until(
    'every stream to be under way',
    () => stub.requests.length - before === STREAMS && receiving.size === STREAMS,
  );
  first.child.kill('SIGKILL');
  expect(await first.exited).toEqual({ code: null, signal: 'SIGKILL' });
  for (const outcome of await Promise.all(cut)) expect(outcome).toBeInstanceOf(Error);
  const killedAt = Date.now();

  // A new serve at once, and hold expiry as production runs it.
  const second = await serve(config);
  const cron = lingxi(['cron', '--config', config]);
  const pending = async () =>
    (
      await database.pool.query<{ n: number }>(
        `select count(*)::int as n from ledger_holds where status = 'pending'`,
      )
    ).rows[0]!.n;
  await until(
    'the streams’ holds to expire',
    async () => (await pending()) === 0,
    HOLD_MS + 20_000,
  );
  expect(Date.now() - killedAt).toBeGreaterThan(HOLD_MS - 3000);
  cron.child.kill('SIGKILL');
  await cron.exited;

  const { holds, usage } = await expectBooksSettled(userId);
  expect(holds.filter((h) => h.status === 'expired')).toHaveLength(STREAMS);
  expect(holds.filter((h) => h.status === 'posted')).toHaveLength(2);
  expect(usage.map((u) => u.outcome)).toEqual(['ok', 'ok']);

  // The new serve charges new calls once each, and nothing again for the old ones.
  await readStream(sdk(second.baseUrl, apiKey), 'after [[tokens=3]]');
  const after = await expectBooksSettled(userId);
  expect(after.usage).toHaveLength(3);
  second.child.kill('SIGKILL');
  await second.exited;
}, 180_000);

test('SIGTERM while calls whose clients left still wait for upstream: they are stopped at the end of the grace and released, not left to a closed pool', async () => {
  // Upstream may take a minute, as a provider's timeout allows; the grace is 1.5 s.
  const served = await serve(configFile('sigterm-left', { shutdownGraceMs: 1500 }, 60_000));
  const { userId, apiKey } = await userWithKey(
    { url: served.baseUrl },
    { telegramId: 9303, balance: FUNDED },
  );
  const client = sdk(served.baseUrl, apiKey, { timeout: 30_000 });
  const before = stub.requests.length;
  // Clients that leave once their calls were forwarded: a non-streamed call waits on for
  // upstream's answer (to charge it), a stream for the headers (a grace of 5 s by default).
  const leaving = Array.from({ length: 3 }, () => new AbortController());
  const calls = leaving.map((controller, i) =>
    client.chat.completions
      .create(
        { model: 'gpt-4o-mini', messages: message(`left ${i} [[stall]]`), stream: i === 2 },
        { signal: controller.signal },
      )
      .catch((error: unknown) => error),
  );
  await until('the calls to reach upstream', () => stub.requests.length - before === 3);
  for (const controller of leaving) controller.abort();
  await Promise.all(calls);
  served.child.kill('SIGTERM');
  expect(await served.exited).toEqual({ code: 0, signal: null });

  const { holds, usage } = await expectBooksSettled(userId);
  expect(holds.map((h) => h.status)).toEqual(['voided', 'voided', 'voided']);
  expect(usage.map((u) => u.outcome)).toEqual([
    'client_disconnected',
    'client_disconnected',
    'client_disconnected',
  ]);
}, 120_000);
