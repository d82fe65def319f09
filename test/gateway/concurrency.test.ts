import { expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { countPromptTokens } from '../support/upstream-stub.js';
import { expectedCost, FLAT_PRICE, useSharedGateways } from './fixtures.js';

let database: TestDatabase;
let gateways: TestService[] = [];

useSharedGateways(3, (shared) => ({ database, gateways } = shared));

test('a budget for exactly N calls, 10xN calls at once through three gateways: exactly N succeed, the rest get 402', async () => {
  const N = 12;
  const messages = [{ role: 'user', content: 'go [[tokens=20]]' }];
  const maxTokens = 20;
  // Each call holds its maximum (max_tokens x the output price: input is free on this model)
  // and, generating max_tokens, settles for exactly that.
  const cost = expectedCost(FLAT_PRICE, {
    prompt: countPromptTokens({ messages }),
    completion: maxTokens,
  });
  expect(cost.eq(new Decimal(maxTokens).mul(FLAT_PRICE.output).div(1_000_000))).toBe(true);
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
