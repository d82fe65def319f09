import OpenAI from 'openai';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, gatewayConfig, MODELS, sdk } from './fixtures.js';

/**
 * The database becomes unreachable while a call is being answered: the call has been served
 * (and upstream paid for it), so its settlement waits for the database and then lands,
 * exactly once. The gateway reaches PostgreSQL through a TCP proxy the test can break.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let proxy: TcpProxy;
let service: TestService;

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  service = await startTestService({
    databaseUrl: url.toString(),
    config: gatewayConfig(stub.url),
  });
});
afterAll(async () => {
  await service?.stop();
  await proxy?.close();
  await stub?.close();
  await database?.drop();
});

/** What the books say about the user, read straight from the database (not through the proxy). */
async function books(userId: string) {
  const { rows } = await database.pool.query<{ outcome: string; cost: string }>(
    `select outcome, cost_usd::text as cost from usage_records where user_id = $1 order by id`,
    [userId],
  );
  const account = await database.pool.query<{ posted: string; held: string; pending: number }>(
    `select trim_scale(a.credits_posted - a.debits_posted)::text as posted,
            trim_scale(a.debits_pending)::text as held,
            (select count(*)::int from ledger_holds h where h.debit_account_id = a.id and h.status = 'pending') as pending
       from ledger_accounts a where a.code = $1`,
    [`liabilities:customers:${userId}`],
  );
  return { usage: rows, ...account.rows[0]! };
}

test('the database goes away during a stream: the settlement is tried again until it is back, and charges exactly once', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 3101, balance: '1' });
  const messages = [{ role: 'user' as const, content: 'count [[tokens=20]] [[delay=20]]' }];
  const stream = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages,
    stream: true,
  });
  let text = '';
  let broken = false;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    if (!broken) {
      // Every connection to the database is reset, and for 1.5 s no new one gets through:
      // longer than the rest of the stream, so the settlement meets the outage.
      broken = true;
      proxy.refuse(true);
      proxy.cut();
      setTimeout(() => proxy.refuse(false), 1500);
    }
  }
  expect(text).toBe(Array.from({ length: 20 }, (_, i) => `tok${i} `).join(''));

  await service.http.services.work.drain(20_000);
  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: 20,
  });
  expect(await books(userId)).toEqual({
    usage: [{ outcome: 'ok', cost: cost.toString() }],
    posted: new Decimal(1).sub(cost).toString(),
    held: '0',
    pending: 0,
  });
});

/**
 * Once upstream has the next call (so its hold is taken), makes the database unreachable
 * for `forMs` (every open connection reset, new ones refused).
 */
function outageOnceUpstreamHasIt(forMs: number): void {
  const before = stub.requests.length;
  const poll = setInterval(() => {
    if (stub.requests.length === before) return;
    clearInterval(poll);
    proxy.refuse(true);
    proxy.cut();
    setTimeout(() => proxy.refuse(false), forMs);
  }, 2);
}

test('the database goes away while upstream answers: the answer waits for the settlement, which lands once', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 3102, balance: '1' });
  const messages = [{ role: 'user' as const, content: 'answer [[tokens=7]] [[delay=300]]' }];
  // The outage starts while upstream takes its 300 ms, and outlasts it.
  outageOnceUpstreamHasIt(1200);
  const { data, response } = await sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages })
    .withResponse();
  const cost = expectedCost(MODELS.mini, {
    prompt: countPromptTokens({ messages }),
    completion: 7,
  });
  expect(data.usage?.completion_tokens).toBe(7);
  expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
  expect(await books(userId)).toEqual({
    usage: [{ outcome: 'ok', cost: cost.toString() }],
    posted: new Decimal(1).sub(cost).toString(),
    held: '0',
    pending: 0,
  });
});

test('the database goes away while upstream fails: the hold is still released, nothing charged', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 3103, balance: '1' });
  const messages = [{ role: 'user' as const, content: 'boom [[fail=500]] [[delay=300]]' }];
  outageOnceUpstreamHasIt(1200);
  const error: unknown = await sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages })
    .catch((e: unknown) => e);
  expect(error).toBeInstanceOf(OpenAI.APIError);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
  expect(await books(userId)).toEqual({
    usage: [{ outcome: 'upstream_error', cost: '0' }],
    posted: '1',
    held: '0',
    pending: 0,
  });
});

test('the database cannot be reached when a call arrives: 503 service_unavailable with retry-after, nothing held or charged', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 3104, balance: '1' });
  const before = stub.requests.length;
  proxy.refuse(true);
  proxy.cut();
  try {
    const error: unknown = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'hello [[tokens=3]]' }],
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(503);
    expect(apiError.code).toBe('service_unavailable');
    expect(apiError.headers?.get('retry-after')).toBe('1');
  } finally {
    proxy.refuse(false);
  }
  expect(stub.requests.length).toBe(before); // never forwarded
  expect(await books(userId)).toEqual({ usage: [], posted: '1', held: '0', pending: 0 });
});
