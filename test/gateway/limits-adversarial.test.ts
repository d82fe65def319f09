import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { admin, startTestService, userWithKey, type TestService } from '../support/service.js';
import { countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import { expectedCost, FLAT_PRICE, gatewayConfig, sdk, useSharedGateways } from './fixtures.js';

/**
 * What a key with limits can get away with when it tries: two gateway processes on one
 * database, the official SDK as the client, streamed and plain calls at once, a revocation
 * while a stream runs, a call that costs more than it reserved, and model names bent to slip
 * past a model list. The key's books (spent, reserved, its usage rows) must agree at the end.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let gateways: TestService[] = [];

useSharedGateways(2, (shared) => ({ database, stub, gateways } = shared));

const drain = () => Promise.all(gateways.map((g) => g.http.services.work.drain(10_000)));

/** The key's running totals, its open reservations, and what its usage rows say it cost. */
async function keyBooks(keyId: string) {
  const { rows } = await database.pool.query<{
    spent: string;
    reserved: string;
    open: number;
    usage: string;
    calls: number;
  }>(
    `select trim_scale(k.spent_usd)::text as spent, trim_scale(k.reserved_usd)::text as reserved,
            (select count(*)::int from api_key_reservations r
              where r.key_id = k.id and r.released_at is null) as open,
            (select trim_scale(coalesce(sum(u.cost_usd), 0))::text from usage_records u
              where u.key_id = k.id) as usage,
            (select count(*)::int from usage_records u where u.key_id = k.id and u.cost_usd > 0) as calls
       from api_keys k where k.id = $1`,
    [keyId],
  );
  return rows[0]!;
}

async function heldOf(userId: string): Promise<string> {
  const { rows } = await database.pool.query<{ held: string }>(
    `select trim_scale(debits_pending)::text as held from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  return rows[0]!.held;
}

function apiError(error: unknown): { status: number | undefined; code: string | null | undefined } {
  if (!(error instanceof OpenAI.APIError)) throw error;
  return { status: error.status, code: error.code };
}

describe('a spend limit across two gateways', () => {
  test('a limit for exactly N calls, 8xN streamed and plain calls at once through two gateways: N served, the rest 402, spent = usage = N calls', async () => {
    const N = 6;
    const maxTokens = 20;
    const messages = [{ role: 'user' as const, content: 'go [[tokens=20]]' }];
    const cost = expectedCost(FLAT_PRICE, {
      prompt: countPromptTokens({ messages }),
      completion: maxTokens,
    });
    // Room for N calls and half of another; a balance far above it: only the limit binds.
    const limit = cost.mul(N).add(cost.div(2));
    const { userId, keyId, apiKey } = await userWithKey(gateways[0]!, {
      telegramId: 7101,
      balance: '100',
      key: { spendLimitUsd: limit.toString() },
    });
    const one = async (i: number) => {
      const client = sdk(gateways[i % 2]!.url, apiKey, { timeout: 30_000 });
      try {
        if (i % 4 < 2) {
          await client.chat.completions.create({ model: 'flat', messages, max_tokens: maxTokens });
          return 'ok';
        }
        const stream = await client.chat.completions.create({
          model: 'flat',
          messages,
          max_tokens: maxTokens,
          stream: true,
        });
        let text = '';
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
        expect(text.split(' ').filter(Boolean)).toHaveLength(maxTokens);
        return 'ok';
      } catch (error) {
        const { status, code } = apiError(error);
        return `${status} ${code}`;
      }
    };
    const outcomes = await Promise.all(Array.from({ length: 8 * N }, (_, i) => one(i)));
    await drain();
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(N);
    expect(new Set(outcomes.filter((o) => o !== 'ok'))).toEqual(
      new Set(['402 spend_limit_exceeded']),
    );
    expect(await keyBooks(keyId)).toEqual({
      spent: cost.mul(N).toString(),
      reserved: '0',
      open: 0,
      usage: cost.mul(N).toString(),
      calls: N,
    });
    expect(new Decimal(cost.mul(N)).lte(limit)).toBe(true);
    expect(await heldOf(userId)).toBe('0');
  });

  test('a call that costs more than it reserved: charged what it cost, the limit counts it, the next call is refused', async () => {
    const { userId, keyId, apiKey } = await userWithKey(gateways[0]!, {
      telegramId: 7102,
      balance: '100',
      // Room for one hold of this call (0.00002715 USD), not for two.
      key: { spendLimitUsd: '0.00003' },
    });
    // The provider says the prompt was far longer than the gateway's bound for it.
    const content = 'big [[tokens=5]] [[prompt-tokens=100000]]';
    const answer = await sdk(gateways[1]!.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content }],
      max_tokens: 20,
    });
    expect(answer.usage?.prompt_tokens).toBe(100_000);
    const charged = expectedCost(
      { input: '0.15', cachedInput: '0.075', output: '0.6' },
      { prompt: 100_000, completion: 5 },
    );
    await drain();
    const books = await keyBooks(keyId);
    // Charged in full (the books agree to the last digit), past the limit it reserved under.
    expect(books).toEqual({
      spent: charged.toString(),
      reserved: '0',
      open: 0,
      usage: charged.toString(),
      calls: 1,
    });
    expect(new Decimal(books.spent).gt('0.00003')).toBe(true);
    expect(await heldOf(userId)).toBe('0');
    // Past its limit, the key is refused on either gateway, and nothing more is reserved.
    for (const gateway of gateways) {
      const refused = await sdk(gateway.url, apiKey)
        .chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content: 'again [[tokens=1]]' }],
          max_tokens: 1,
        })
        .catch((e: unknown) => e);
      expect(apiError(refused)).toEqual({ status: 402, code: 'spend_limit_exceeded' });
    }
    expect(await keyBooks(keyId)).toEqual(books);
  });

  test('a key revoked on one gateway while its stream runs on the other: the stream is charged what it generated, its reservation released, and the key is refused everywhere', async () => {
    const { userId, keyId, apiKey } = await userWithKey(gateways[0]!, {
      telegramId: 7103,
      balance: '100',
      key: { spendLimitUsd: '1' },
    });
    const controller = new AbortController();
    const stream = await sdk(gateways[0]!.url, apiKey).chat.completions.create(
      {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'long [[tokens=50]] [[stall-after=3]]' }],
        max_tokens: 50,
        stream: true,
      },
      { signal: controller.signal },
    );
    let received = '';
    const reading = (async () => {
      for await (const chunk of stream) {
        received += chunk.choices[0]?.delta?.content ?? '';
        if (received === 'tok0 ') {
          // In flight: its reservation is open on the key.
          expect((await keyBooks(keyId)).open).toBe(1);
          const revoked = await admin<{ alreadyRevoked: boolean }>(
            gateways[1]!,
            'DELETE',
            `/users/${userId}/keys/${keyId}`,
          );
          expect(revoked.status).toBe(200);
        }
        // The client leaves once the key is revoked (upstream has gone silent after tok1).
        if (received === 'tok0 tok1 ') controller.abort();
      }
    })().catch((e: unknown) => e);
    // The SDK ends the loop or throws its abort error: either way the client has left.
    const left = await reading;
    if (left !== undefined) expect(left).toBeInstanceOf(Error);
    expect(received).toBe('tok0 tok1 ');
    await drain();
    const books = await keyBooks(keyId);
    expect(books.reserved).toBe('0');
    expect(books.open).toBe(0);
    expect(books.spent).toBe(books.usage);
    expect(new Decimal(books.spent).gt(0)).toBe(true);
    expect(await heldOf(userId)).toBe('0');
    const { rows } = await database.pool.query(
      'select outcome from usage_records where key_id = $1',
      [keyId],
    );
    expect(rows).toEqual([{ outcome: 'client_disconnected' }]);
    for (const gateway of gateways) {
      await expect
        .poll(
          async () =>
            (
              await fetch(`${gateway.url}/v1/models`, {
                headers: { authorization: `Bearer ${apiKey}` },
              })
            ).status,
          { timeout: 20_000, interval: 20 },
        )
        .toBe(401);
    }
  });
});

describe('a model list', () => {
  test('case, whitespace, a provider prefix, the upstream name of another model, another endpoint: refused, nothing held or charged', async () => {
    const { userId, keyId, apiKey } = await userWithKey(gateways[0]!, {
      telegramId: 7104,
      balance: '10',
      key: { allowedModels: ['gpt-4o-mini'] },
    });
    const client = sdk(gateways[1]!.url, apiKey);
    const messages = [{ role: 'user' as const, content: 'hi [[tokens=1]]' }];
    const refusedChat: Array<[string, number, string]> = [
      ['precise', 403, 'model_not_allowed'],
      ['flat', 403, 'model_not_allowed'],
      ['PRECISE', 404, 'model_not_found'],
      ['Precise', 404, 'model_not_found'],
      [' precise', 404, 'model_not_found'],
      ['precise ', 404, 'model_not_found'],
      ['precise\n', 404, 'model_not_found'],
      ['stub/precise', 404, 'model_not_found'],
      ['openai/o3-mini', 404, 'model_not_found'],
      // The upstream name of `precise`.
      ['o3-mini', 404, 'model_not_found'],
      ['gpt-4o-mini/../precise', 404, 'model_not_found'],
      ['precise\u0000', 404, 'model_not_found'],
    ];
    for (const [model, status, code] of refusedChat) {
      for (const stream of [false, true]) {
        const error = await client.chat.completions
          .create({ model, messages, stream })
          .catch((e: unknown) => e);
        expect({ model, stream, ...apiError(error) }).toEqual({ model, stream, status, code });
      }
    }
    const embedding = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: 'hi' })
      .catch((e: unknown) => e);
    expect(apiError(embedding)).toEqual({ status: 403, code: 'model_not_allowed' });
    // A list of models in the body is not a model.
    const listed = await fetch(`${gateways[0]!.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: ['gpt-4o-mini', 'precise'], messages }),
    });
    expect(listed.status).toBe(400);
    await drain();
    expect(await keyBooks(keyId)).toMatchObject({ usage: '0', calls: 0, reserved: '0' });
    expect(await heldOf(userId)).toBe('0');
    const { rows } = await database.pool.query(
      'select count(*)::int as n from usage_records where key_id = $1',
      [keyId],
    );
    expect(rows[0].n).toBe(0);
    // The model it may use works.
    const ok = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
    expect(ok.model).toBe('gpt-4o-mini');
  });
  test('GET /v1/models lists the models the key can call: those of its list, all for a key without one', async () => {
    const { apiKey: chatOnly } = await userWithKey(gateways[0]!, {
      telegramId: 7105,
      key: { allowedModels: ['precise', 'not-configured'] },
    });
    const { apiKey: none } = await userWithKey(gateways[0]!, {
      telegramId: 7106,
      key: { allowedModels: [] },
    });
    const { apiKey: all } = await userWithKey(gateways[0]!, { telegramId: 7107 });
    const ids = async (key: string) =>
      (await sdk(gateways[1]!.url, key).models.list()).data.map((m) => m.id).sort();
    expect(await ids(chatOnly)).toEqual(['precise']);
    expect(await ids(none)).toEqual([]);
    expect(await ids(all)).toEqual(
      ['flat', 'gpt-4o-mini', 'precise', 'text-embedding-3-small'].sort(),
    );
  });
});

describe('rate limits across two gateways', () => {
  const limited: TestService[] = [];
  beforeAll(async () => {
    const config = gatewayConfig(stub.url, {
      gateway: { rateLimit: { requestsPerMinute: 6, tokensPerMinute: 2_500 } },
    });
    for (let i = 0; i < 2; i += 1)
      limited.push(await startTestService({ databaseUrl: database.url, config }));
  });
  afterAll(async () => {
    for (const gateway of limited) await gateway.stop();
  });

  async function outcomesOf(keyId: string) {
    const { rows } = await database.pool.query<{ outcome: string; n: number; cost: string }>(
      `select outcome, count(*)::int as n, trim_scale(sum(cost_usd))::text as cost
         from usage_records where key_id = $1 group by outcome order by outcome`,
      [keyId],
    );
    return rows;
  }

  test('18 streamed and plain calls at once through two gateways: the key gets its 6 requests, the rest 429 with retry-after, recorded, nothing held', async () => {
    const { userId, keyId, apiKey } = await userWithKey(limited[0]!, {
      telegramId: 7201,
      balance: '10',
    });
    const messages = [{ role: 'user' as const, content: 'hi [[tokens=2]]' }];
    const one = async (i: number) => {
      const client = sdk(limited[i % 2]!.url, apiKey);
      try {
        if (i % 3 === 0) {
          const stream = await client.chat.completions.create({
            model: 'gpt-4o-mini',
            messages,
            max_tokens: 2,
            stream: true,
          });
          for await (const _ of stream);
        } else {
          await client.chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 2 });
        }
        return 'ok';
      } catch (error) {
        if (!(error instanceof OpenAI.APIError)) throw error;
        const retryAfter = Number(error.headers?.get('retry-after'));
        expect(retryAfter).toBeGreaterThanOrEqual(1);
        expect(retryAfter).toBeLessThanOrEqual(10);
        return `${error.status} ${error.code}`;
      }
    };
    const outcomes = await Promise.all(Array.from({ length: 18 }, (_, i) => one(i)));
    await Promise.all(limited.map((g) => g.http.services.work.drain(10_000)));
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(6);
    expect(outcomes.filter((o) => o === '429 rate_limit_exceeded')).toHaveLength(12);
    const rows = await outcomesOf(keyId);
    expect(rows.map(({ outcome, n }) => ({ outcome, n }))).toEqual([
      { outcome: 'ok', n: 6 },
      { outcome: 'rate_limited', n: 12 },
    ]);
    expect(rows[1]!.cost).toBe('0');
    expect(await heldOf(userId)).toBe('0');
  });

  test('a stream whose client left after its first words still took its whole token bound: the next call that does not fit is 429 on the other gateway', async () => {
    const { keyId, apiKey } = await userWithKey(limited[0]!, { telegramId: 7202, balance: '10' });
    // Each call's bound is its prompt's bound plus 1,000: two fit in 2,500 tokens, three do not.
    const controller = new AbortController();
    const stream = await sdk(limited[0]!.url, apiKey).chat.completions.create(
      {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'long [[tokens=1000]] [[stall-after=3]]' }],
        max_tokens: 1000,
        stream: true,
      },
      { signal: controller.signal },
    );
    let received = '';
    await (async () => {
      for await (const chunk of stream) {
        received += chunk.choices[0]?.delta?.content ?? '';
        if (received.startsWith('tok0 ')) controller.abort();
      }
    })().catch(() => {});
    // Upstream sent two words before going silent; the client left after reading one or both.
    expect(['tok0 ', 'tok0 tok1 ']).toContain(received);
    const client = sdk(limited[1]!.url, apiKey);
    const ask = { messages: [{ role: 'user' as const, content: 'short [[tokens=2]]' }] };
    await client.chat.completions.create({ model: 'gpt-4o-mini', ...ask, max_tokens: 1000 });
    const third = await client.chat.completions
      .create({ model: 'gpt-4o-mini', ...ask, max_tokens: 1000 })
      .catch((e: unknown) => e);
    expect(apiError(third)).toEqual({ status: 429, code: 'rate_limit_exceeded' });
    expect((third as Error).message).toMatch(/2500 tokens per minute/);
    // A small call still fits what is left, on the first gateway.
    await sdk(limited[0]!.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      ...ask,
      max_tokens: 2,
    });
    await Promise.all(limited.map((g) => g.http.services.work.drain(10_000)));
    expect((await outcomesOf(keyId)).map(({ outcome, n }) => ({ outcome, n }))).toEqual([
      { outcome: 'client_disconnected', n: 1 },
      { outcome: 'ok', n: 2 },
      { outcome: 'rate_limited', n: 1 },
    ]);
  });
});
