import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, gatewayConfig } from './fixtures.js';

const FLAT = { input: '0', cachedInput: '0', output: '1.234567890123' };

let database: TestDatabase;
let stub: UpstreamStub;
const gateways: TestService[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  const base = gatewayConfig(stub.url);
  const config = gatewayConfig(stub.url, {
    // 120 calls at once on a shared machine: a slow moment must not turn into a 502.
    providers: base.providers!.map((p) => ({ ...p, timeoutMs: 15_000 })),
    // Output priced only, so a call's hold (max_tokens x output price) is exactly what it
    // costs when it generates max_tokens: the budget then fits exactly N calls, in any order.
    models: [
      ...base.models!,
      {
        id: 'flat',
        provider: 'stub',
        upstreamModel: 'gpt-4o-mini',
        pricePer1M: FLAT,
        maxOutputTokensDefault: 256,
        maxOutputTokensLimit: 4096,
      },
    ],
  });
  for (let i = 0; i < 3; i += 1)
    gateways.push(await startTestService({ databaseUrl: database.url, config }));
});
afterAll(async () => {
  for (const gateway of gateways) await gateway.stop();
  await stub?.close();
  await database?.drop();
});

test('a budget for exactly N calls, 10xN calls at once through three gateways: exactly N succeed, the rest get 402', async () => {
  const N = 12;
  const messages = [{ role: 'user', content: 'go [[tokens=20]]' }];
  const maxTokens = 20;
  // Each call holds its maximum (max_tokens x the output price: input is free on this model)
  // and, generating max_tokens, settles for exactly that.
  const cost = expectedCost(FLAT, {
    prompt: countPromptTokens({ messages }),
    completion: maxTokens,
  });
  expect(cost.eq(new Decimal(maxTokens).mul(FLAT.output).div(1_000_000))).toBe(true);
  // Enough for N calls, not for N + 1.
  const budget = cost.mul(N).add(cost.div(2));
  const { userId, apiKey } = await userWithKey(gateways[0]!, {
    telegramId: 4001,
    balance: budget.toString(),
  });

  let lowest: Decimal | null = null;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await database.pool.query(
        `select credits_posted - debits_posted - debits_pending as available from ledger_accounts where code = $1`,
        [`liabilities:customers:${userId}`],
      );
      const available = new Decimal(rows[0].available);
      if (lowest === null || available.lt(lowest)) lowest = available;
    }
  })();

  const statuses = await Promise.all(
    Array.from({ length: 10 * N }, (_, i) =>
      fetch(`${gateways[i % gateways.length]!.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'flat', messages, max_tokens: maxTokens }),
      }).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as { error?: { code: string } },
      })),
    ),
  );
  sampling = false;
  await sampler;

  const ok = statuses.filter((s) => s.status === 200);
  const refused = statuses.filter((s) => s.status === 402);
  expect(ok.length).toBe(N);
  expect(refused.length).toBe(9 * N);
  for (const r of refused) expect(r.body.error?.code).toBe('insufficient_balance');
  const spent = cost.mul(N);
  const { rows } = await database.pool.query(
    `select credits_posted - debits_posted as posted, debits_pending as held from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  expect(new Decimal(rows[0].posted).toString()).toBe(budget.sub(spent).toString());
  expect(new Decimal(rows[0].held).isZero()).toBe(true);
  expect(lowest!.isNegative()).toBe(false);

  // Law 7: the usage records' charges equal the revenue postings, to the last digit.
  const sums = await database.pool.query(`
    select (select coalesce(sum(cost_usd), 0) from usage_records) as usage,
           (select coalesce(-sum(p.amount), 0) from ledger_postings p join ledger_accounts a on a.id = p.account_id
             where a.code = 'revenue:usage') as revenue`);
  expect(new Decimal(sums.rows[0].usage).toString()).toBe(
    new Decimal(sums.rows[0].revenue).toString(),
  );
  expect(new Decimal(sums.rows[0].usage).toString()).toBe(spent.toString());
});
