import { BadRequestError } from 'openai';
import type { ChatCompletionCreateParamsNonStreaming } from 'openai/resources/chat/completions';
import { describe, expect, test, vi } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { admin, userWithKey, type TestService } from '../support/service.js';
import {
  countEmbeddingTokens,
  countPromptTokens,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, MODELS, sdk, useGatewayStack } from './fixtures.js';

/**
 * `service_tier`: the price table holds standard-tier prices, so a tier OpenAI bills above
 * them (Priority processing, Scale Tier units) is refused before anything is held or sent,
 * and an answer served at such a tier anyway (the project's default tier) is reported.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;

useGatewayStack((stack) => ({ database, stub, service } = stack));

let nextTelegramId = 7000;

type Tier = Exclude<ChatCompletionCreateParamsNonStreaming['service_tier'], undefined>;

async function balance(userId: string) {
  const { body } = await admin<{ available: string; posted: string; held: string }>(
    service,
    'GET',
    `/users/${userId}/balance`,
  );
  return body;
}

async function usageCount(userId: string): Promise<number> {
  const { rows } = await database.pool.query<{ n: number }>(
    'select count(*)::int as n from usage_records where user_id = $1',
    [userId],
  );
  return rows[0]!.n;
}

/** The counter of answers served at a tier the table does not price, as /metrics shows it. */
async function unpricedTierCount(tier: string, model = 'gpt-4o-mini'): Promise<number> {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith('lingxi_gateway_unpriced_service_tier_total{') &&
        l.includes(`model="${model}"`) &&
        l.includes('provider="stub"') &&
        l.includes(`tier="${tier}"`),
    );
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

describe('a request for a tier billed above the price table', () => {
  test.each([
    ['priority', false],
    ['priority', true],
    ['scale', false],
    ['ultrafast', false],
  ])(
    'service_tier %j (stream: %s): 400 feature_not_priced, nothing held, sent or charged',
    async (tier, stream) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId: nextTelegramId++,
        balance: '2',
      });
      const client = sdk(service.url, apiKey);
      const ledgerBefore = await ledgerRowCounts(database.pool);
      const upstreamBefore = stub.requests.length;
      const params = {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user' as const, content: 'hello' }],
        service_tier: tier as Tier,
      };
      const refused = await (
        stream
          ? client.chat.completions.create({ ...params, stream: true })
          : client.chat.completions.create(params)
      ).then(
        () => null,
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(BadRequestError);
      const error = refused as BadRequestError;
      expect(error.status).toBe(400);
      expect(error.code).toBe('feature_not_priced');
      expect(error.param).toBe('service_tier');
      expect(error.type).toBe('invalid_request_error');
      expect(error.message).toContain(
        `service_tier: the service tier "${tier}" (only \`auto\`, \`default\`, \`flex\` and \`on_demand\` are priced) has no price on \`gpt-4o-mini\`, so it is not served; nothing was charged`,
      );
      expect(await balance(userId)).toEqual({
        currency: 'USD',
        available: '2',
        posted: '2',
        held: '0',
      });
      expect(await ledgerRowCounts(database.pool)).toEqual(ledgerBefore);
      expect(await usageCount(userId)).toBe(0);
      expect(stub.requests.length).toBe(upstreamBefore);
    },
  );
});

describe('a request for the standard tier or flex', () => {
  test.each([['flex'], ['default'], ['auto'], ['on_demand'], [null], [undefined]])(
    'service_tier %j: served, and charged exactly tokens x table prices',
    async (tier) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId: nextTelegramId++,
        balance: '2',
      });
      const client = sdk(service.url, apiKey);
      const messages = [{ role: 'user' as const, content: 'hello [[tokens=9]]' }];
      const counted = await unpricedTierCount('priority');
      const { data, response } = await client.chat.completions
        .create({
          model: 'gpt-4o-mini',
          messages,
          ...(tier === undefined ? {} : { service_tier: tier as Tier }),
        })
        .withResponse();
      // Sent upstream as the client wrote it; the answer says the tier that served it.
      const sent = stub.requests.at(-1)!.body as Record<string, unknown>;
      expect(sent['service_tier']).toBe(tier);
      expect(data.service_tier).toBe(tier === 'flex' ? 'flex' : 'default');
      const cost = expectedCost(MODELS.mini, {
        prompt: countPromptTokens({ messages }),
        completion: 9,
      });
      expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
      expect((await balance(userId)).posted).toBe(new Decimal(2).sub(cost).toString());
      expect(await usageCount(userId)).toBe(1);
      expect(await unpricedTierCount('priority')).toBe(counted);
    },
  );

  test('a flex stream: every chunk reports the tier, the charge is the table price', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 8999, balance: '2' });
    const client = sdk(service.url, apiKey);
    const messages = [{ role: 'user' as const, content: 'hello [[tokens=4]]' }];
    const chunks = [];
    for await (const chunk of await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      service_tier: 'flex',
      stream: true,
      stream_options: { include_usage: true },
    }))
      chunks.push(chunk);
    expect(chunks.map((chunk) => chunk.service_tier)).toEqual(chunks.map(() => 'flex'));
    await service.http.services.work.drain(5000);
    const cost = expectedCost(MODELS.mini, {
      prompt: countPromptTokens({ messages }),
      completion: 4,
    });
    expect((await balance(userId)).posted).toBe(new Decimal(2).sub(cost).toString());
  });
});

describe('an answer served at priority although none was asked for (project default tier)', () => {
  test.each([[false], [true]])(
    'stream: %s: charged at table prices, counted in the metric and logged with the request id',
    async (stream) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId: stream ? 9001 : 9002,
        balance: '2',
      });
      const client = sdk(service.url, apiKey);
      const messages = [
        { role: 'user' as const, content: 'hello [[tokens=5]] [[project-priority]]' },
      ];
      const counted = await unpricedTierCount('priority');
      const warn = vi.spyOn(service.runtime.logger, 'warn');
      try {
        let requestId: string | null;
        if (stream) {
          const { data, response } = await client.chat.completions
            .create({ model: 'gpt-4o-mini', messages, stream: true })
            .withResponse();
          requestId = response.headers.get('x-request-id');
          const tiers = [];
          for await (const chunk of data) tiers.push(chunk.service_tier);
          expect(tiers).toEqual(tiers.map(() => 'priority'));
          await service.http.services.work.drain(5000);
        } else {
          const { data, response } = await client.chat.completions
            .create({ model: 'gpt-4o-mini', messages })
            .withResponse();
          requestId = response.headers.get('x-request-id');
          expect(data.service_tier).toBe('priority');
        }
        expect(requestId).toMatch(/^req_/);
        expect(await unpricedTierCount('priority')).toBe(counted + 1);
        expect(warn).toHaveBeenCalledWith(
          expect.objectContaining({
            requestId,
            model: 'gpt-4o-mini',
            provider: 'stub',
            serviceTier: 'priority',
          }),
          expect.stringMatching(/service tier the price table does not cover/),
        );
      } finally {
        warn.mockRestore();
      }
      const cost = expectedCost(MODELS.mini, {
        prompt: countPromptTokens({ messages }),
        completion: 5,
      });
      expect((await balance(userId)).posted).toBe(new Decimal(2).sub(cost).toString());
    },
  );
});

describe('a stream whose later chunks report a dearer tier than its first', () => {
  test('counted and logged once, with the dearer tier; charged at table prices', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 9003, balance: '2' });
    const client = sdk(service.url, apiKey);
    const messages = [{ role: 'user' as const, content: 'hello [[tokens=4]] [[sse=tier-late]]' }];
    const counted = await unpricedTierCount('priority');
    const warn = vi.spyOn(service.runtime.logger, 'warn');
    try {
      const { data, response } = await client.chat.completions
        .create({
          model: 'gpt-4o-mini',
          messages,
          stream: true,
          stream_options: { include_usage: true },
        })
        .withResponse();
      const requestId = response.headers.get('x-request-id');
      const tiers = [];
      for await (const chunk of data) tiers.push(chunk.service_tier);
      // The role chunk says `default`; the tokens, the finish and the usage chunk `priority`.
      expect(tiers).toEqual(['default', ...tiers.slice(1).map(() => 'priority')]);
      expect(tiers.length).toBeGreaterThan(2);
      await service.http.services.work.drain(5000);
      expect(await unpricedTierCount('priority')).toBe(counted + 1);
      const noted = warn.mock.calls.filter(([fields]) => {
        const { requestId: id } = fields as unknown as Record<string, unknown>;
        return id === requestId;
      });
      expect(noted).toEqual([
        [
          expect.objectContaining({ requestId, serviceTier: 'priority' }),
          expect.stringMatching(/service tier the price table does not cover/),
        ],
      ]);
    } finally {
      warn.mockRestore();
    }
    const cost = expectedCost(MODELS.mini, {
      prompt: countPromptTokens({ messages }),
      completion: 4,
    });
    expect((await balance(userId)).posted).toBe(new Decimal(2).sub(cost).toString());
  });
});

describe('an embeddings request with a service tier: the same rule as a chat request', () => {
  test.each([['priority'], ['scale'], ['Default'], [['default']]])(
    'service_tier %j: 400 feature_not_priced, nothing held, sent or charged',
    async (tier) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId: nextTelegramId++,
        balance: '2',
      });
      const ledgerBefore = await ledgerRowCounts(database.pool);
      const upstreamBefore = stub.requests.length;
      const refused = await sdk(service.url, apiKey)
        .embeddings.create({
          model: 'text-embedding-3-small',
          input: 'hello',
          // @ts-expect-error: the SDK's embeddings type has no service_tier; a client can send it
          service_tier: tier,
        })
        .then(
          () => null,
          (error: unknown) => error,
        );
      expect(refused).toBeInstanceOf(BadRequestError);
      const error = refused as BadRequestError;
      expect([error.status, error.code, error.param, error.type]).toEqual([
        400,
        'feature_not_priced',
        'service_tier',
        'invalid_request_error',
      ]);
      expect(error.message).toContain(
        `service_tier: the service tier ${JSON.stringify(tier)} (only \`auto\`, \`default\`, \`flex\` and \`on_demand\` are priced) has no price on \`text-embedding-3-small\`, so it is not served; nothing was charged`,
      );
      expect(await balance(userId)).toEqual({
        currency: 'USD',
        available: '2',
        posted: '2',
        held: '0',
      });
      expect(await ledgerRowCounts(database.pool)).toEqual(ledgerBefore);
      expect(await usageCount(userId)).toBe(0);
      expect(stub.requests.length).toBe(upstreamBefore);
    },
  );

  test.each([['default'], ['flex'], ['auto'], [null]])(
    'service_tier %j: served and sent upstream as written',
    async (tier) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId: nextTelegramId++,
        balance: '2',
      });
      const answer = await sdk(service.url, apiKey).embeddings.create({
        model: 'text-embedding-3-small',
        input: 'hello',
        // @ts-expect-error: the SDK's embeddings type has no service_tier; a client can send it
        service_tier: tier,
      });
      expect(answer.data).toHaveLength(1);
      const sent = stub.requests.at(-1)!.body as Record<string, unknown>;
      expect(sent['service_tier']).toBe(tier);
      expect(await usageCount(userId)).toBe(1);
    },
  );
});

describe('an embeddings answer served at a tier the table does not price', () => {
  test('charged at table prices, counted in the metric and logged, as a chat answer is', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 9004, balance: '2' });
    const input = 'embed me [[project-priority]]';
    const counted = await unpricedTierCount('priority', 'text-embedding-3-small');
    const warn = vi.spyOn(service.runtime.logger, 'warn');
    try {
      const { data, response } = await sdk(service.url, apiKey)
        .embeddings.create({ model: 'text-embedding-3-small', input })
        .withResponse();
      const requestId = response.headers.get('x-request-id');
      expect(requestId).toMatch(/^req_/);
      // Passed on as the provider sent it.
      expect((data as unknown as Record<string, unknown>)['service_tier']).toBe('priority');
      expect(await unpricedTierCount('priority', 'text-embedding-3-small')).toBe(counted + 1);
      expect(warn).toHaveBeenCalledWith(
        expect.objectContaining({
          requestId,
          model: 'text-embedding-3-small',
          provider: 'stub',
          serviceTier: 'priority',
        }),
        expect.stringMatching(/service tier the price table does not cover/),
      );
      const cost = new Decimal(countEmbeddingTokens({ input })).mul(MODELS.embed.input).div(1e6);
      expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
      expect((await balance(userId)).posted).toBe(new Decimal(2).sub(cost).toString());
    } finally {
      warn.mockRestore();
    }
  });

  test('an answer reporting no tier, or the standard one, is not counted', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 9005, balance: '2' });
    const counted = await unpricedTierCount('priority', 'text-embedding-3-small');
    const client = sdk(service.url, apiKey);
    await client.embeddings.create({ model: 'text-embedding-3-small', input: 'plain' });
    // The project's default is Priority, but the request asked for the standard tier.
    await client.embeddings.create({
      model: 'text-embedding-3-small',
      input: 'standard [[project-priority]]',
      // @ts-expect-error: the SDK's embeddings type has no service_tier; a client can send it
      service_tier: 'default',
    });
    expect(await unpricedTierCount('priority', 'text-embedding-3-small')).toBe(counted);
  });
});
