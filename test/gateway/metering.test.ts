import OpenAI from 'openai';
import { describe, expect, test, vi } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { admin, userWithKey, type TestService } from '../support/service.js';
import { choicesText, estimateTokens } from '../../src/gateway/tokens.js';
import { connect } from '../../src/db/connect.js';
import { syncPrices } from '../../src/gateway/pricing.js';
import { maxUsage, readUsage } from '../../src/gateway/upstream.js';
import { completionText, countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import { expectedCost, useGatewayStack, MODELS, sdk, type GatewayStack } from './fixtures.js';

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;

useGatewayStack((stack) => ({ database, stub, service } = stack));

async function balance(userId: string) {
  const { body } = await admin<{ available: string; posted: string; held: string }>(
    service,
    'GET',
    `/users/${userId}/balance`,
  );
  return body;
}

async function usageRows(userId: string) {
  const { rows } = await database.pool.query(
    `select request_id, model, prompt_tokens::text, cached_tokens::text, completion_tokens::text, reasoning_tokens::text,
            cost_usd::text, estimated, outcome, http_status, stream, price_id::text, entry_id, client_ip, user_agent, latency_ms
       from usage_records where user_id = $1 order by id`,
    [userId],
  );
  return rows;
}

describe('non-streaming calls through the official SDK', () => {
  test('the balance drops by exactly tokens x prices, and the cost header says so', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1001, balance: '5' });
    const client = sdk(service.url, apiKey);
    const messages = [
      { role: 'system' as const, content: 'You are terse.' },
      { role: 'user' as const, content: 'Say hello [[tokens=37]] [[cached=5]]' },
    ];
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages })
      .withResponse();
    const prompt = countPromptTokens({ messages });
    expect(data.usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: 37 });
    expect(data.model).toBe('gpt-4o-mini');
    const cost = expectedCost(MODELS.mini, { prompt, cached: 5, completion: 37 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(response.headers.get('x-request-id')).toMatch(/^req_/);
    expect(await balance(userId)).toEqual({
      currency: 'USD',
      available: new Decimal(5).sub(cost).toString(),
      posted: new Decimal(5).sub(cost).toString(),
      held: '0',
    });
    const [row] = await usageRows(userId);
    expect(row).toMatchObject({
      model: 'gpt-4o-mini',
      prompt_tokens: String(prompt),
      cached_tokens: '5',
      completion_tokens: '37',
      cost_usd: cost.toString(),
      estimated: false,
      outcome: 'ok',
      http_status: 200,
      stream: false,
      client_ip: '127.0.0.1',
    });
    expect(row.user_agent).toMatch(/OpenAI\/JS/);
    expect(row.entry_id).toBeTruthy();
  });

  test('twelve-decimal prices with cached and reasoning tokens are charged to the last digit', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1002, balance: '1' });
    const client = sdk(service.url, apiKey);
    let total = new Decimal(0);
    for (const [tokens, cached, reasoning] of [
      [1, 0, 0],
      [250, 7, 11],
      [3, 3, 2],
    ] as const) {
      const messages = [
        {
          role: 'user' as const,
          content: `q [[tokens=${tokens}]] [[cached=${cached}]] [[reasoning=${reasoning}]]`,
        },
      ];
      const { data, response } = await client.chat.completions
        .create({ model: 'precise', messages, max_completion_tokens: 300 })
        .withResponse();
      const prompt = countPromptTokens({ messages });
      const cost = expectedCost(MODELS.precise, {
        prompt,
        cached: Math.min(cached, prompt),
        completion: tokens + reasoning,
        reasoning,
      });
      expect(data.usage?.completion_tokens).toBe(tokens + reasoning);
      expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
      total = total.add(cost);
    }
    expect(total.decimalPlaces()).toBeGreaterThan(12);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(total).toString());
  });
});

describe('usage counts as upstream writes them', () => {
  test('counts sent as strings of digits are charged exactly, not as 0', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1021, balance: '1' });
    const messages = [
      {
        role: 'user' as const,
        content: 'q [[tokens=40]] [[cached=3]] [[reasoning=7]] [[usage-strings]]',
      },
    ];
    const { data, response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'precise', messages })
      .withResponse();
    expect(data.usage?.completion_tokens).toBe('47');
    const prompt = countPromptTokens({ messages });
    const cost = expectedCost(MODELS.precise, { prompt, cached: 3, completion: 47, reasoning: 7 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await usageRows(userId)).toMatchObject([
      {
        prompt_tokens: String(prompt),
        cached_tokens: '3',
        completion_tokens: '47',
        reasoning_tokens: '7',
        cost_usd: cost.toString(),
        estimated: false,
      },
    ]);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });

  test('a count a JSON number cannot carry exactly, or that is no count, makes the usage unreadable (an estimate), never 0', () => {
    // 2^53 + 1 parses as 2^53: the count upstream sent is lost.
    expect(
      readUsage(JSON.parse('{"prompt_tokens": 12, "completion_tokens": 9007199254740993}')),
    ).toBeNull();
    expect(readUsage({ prompt_tokens: 12, completion_tokens: 4.5 })).toBeNull();
    expect(readUsage({ prompt_tokens: -1, completion_tokens: 4 })).toBeNull();
    expect(readUsage({ prompt_tokens: '12', completion_tokens: 'many' })).toBeNull();
    // More digits than the usage row's bigint columns hold.
    expect(readUsage({ prompt_tokens: '1'.repeat(19), completion_tokens: 4 })).toBeNull();
    expect(readUsage({ prompt_tokens: 12, completion_tokens: '9007199254740993' })).toEqual({
      promptTokens: 12n,
      cachedTokens: 0n,
      cacheWriteTokens: 0n,
      completionTokens: 9007199254740993n,
      reasoningTokens: 0n,
    });
    // Absent counts (an embedding has no completion tokens) and null details are 0.
    expect(readUsage({ prompt_tokens: 8, total_tokens: 8, prompt_tokens_details: null })).toEqual({
      promptTokens: 8n,
      cachedTokens: 0n,
      cacheWriteTokens: 0n,
      completionTokens: 0n,
      reasoningTokens: 0n,
    });
    // The counts added since are held to the same rule.
    expect(readUsage({ prompt_tokens: 8, completion_tokens: 2, total_tokens: 10.5 })).toBeNull();
    expect(
      readUsage({ prompt_tokens: 8, prompt_tokens_details: { cache_write_tokens: 'some' } }),
    ).toBeNull();
    expect(readUsage({ prompt_tokens: 8, cache_creation_input_tokens: -3 })).toBeNull();
    expect(readUsage({ prompt_tokens: 8, prompt_cache_hit_tokens: 2.5 })).toBeNull();
    expect(readUsage({ prompt_tokens: 8, prompt_cache_miss_tokens: 'none' })).toBeNull();
  });

  test('usage reported more than once in a stream is merged count by count, each the largest', () => {
    const merged = (...reports: Record<string, unknown>[]) =>
      readUsage(reports.reduce<Record<string, unknown> | null>(maxUsage, null));
    // Split: the prompt's counts first, the completion's last. Its total_tokens (the whole
    // call's, without prompt_tokens beside it) is not read as 10 tokens generated outside
    // completion_tokens, as reading the last report alone, then taking the largest, would.
    expect(
      merged(
        { prompt_tokens: 10, prompt_tokens_details: { cached_tokens: 4 } },
        {
          completion_tokens: 3,
          completion_tokens_details: { reasoning_tokens: 1 },
          total_tokens: 13,
        },
      ),
    ).toEqual({
      promptTokens: 10n,
      cachedTokens: 4n,
      cacheWriteTokens: 0n,
      completionTokens: 3n,
      reasoningTokens: 1n,
    });
    // Cumulative: the last. Strings and numbers compare by value; null details clear nothing.
    expect(
      merged(
        { prompt_tokens: 10, completion_tokens: 1, prompt_tokens_details: { cached_tokens: 4 } },
        { prompt_tokens: '10', completion_tokens: '12', prompt_tokens_details: null },
      ),
    ).toEqual({
      promptTokens: 10n,
      cachedTokens: 4n,
      cacheWriteTokens: 0n,
      completionTokens: 12n,
      reasoningTokens: 0n,
    });
  });

  test('the usage is read as a whole: output outside completion_tokens is reasoning, cache writes are part of the prompt', () => {
    const read = (usage: Record<string, unknown>) => {
      const u = readUsage(usage)!;
      return [
        u.promptTokens,
        u.cachedTokens,
        u.cacheWriteTokens,
        u.completionTokens,
        u.reasoningTokens,
      ];
    };
    // OpenAI: reasoning inside completion_tokens, the total adds up.
    expect(
      read({
        prompt_tokens: 20,
        completion_tokens: 100,
        total_tokens: 120,
        completion_tokens_details: { reasoning_tokens: 60 },
      }),
    ).toEqual([20n, 0n, 0n, 100n, 60n]);
    // xAI: reasoning beside completion_tokens, in the total.
    expect(
      read({
        prompt_tokens: 10120,
        completion_tokens: 1499,
        total_tokens: 14428,
        prompt_tokens_details: { cached_tokens: 128 },
        completion_tokens_details: { reasoning_tokens: 2809 },
      }),
    ).toEqual([10120n, 128n, 0n, 4308n, 2809n]);
    // xAI without a total: more reasoning than completion cannot be inside it.
    expect(
      read({
        prompt_tokens: 12,
        completion_tokens: 1,
        completion_tokens_details: { reasoning_tokens: 97 },
      }),
    ).toEqual([12n, 0n, 0n, 98n, 97n]);
    // Gemini: thinking in the total only; or as reasoning_tokens with completion_tokens 0.
    expect(read({ prompt_tokens: 20, completion_tokens: 198, total_tokens: 623 })).toEqual([
      20n,
      0n,
      0n,
      603n,
      405n,
    ]);
    expect(
      read({
        prompt_tokens: 21,
        completion_tokens: 0,
        total_tokens: 81,
        completion_tokens_details: { reasoning_tokens: 60 },
      }),
    ).toEqual([21n, 0n, 0n, 60n, 60n]);
    // A total below prompt + completion charges no less than they say.
    expect(read({ prompt_tokens: 20, completion_tokens: 10, total_tokens: 5 })).toEqual([
      20n,
      0n,
      0n,
      10n,
      0n,
    ]);
    // Cache writes: OpenRouter's field, Anthropic's name (top level or in the details), the
    // larger when several; a prompt smaller than its cache reads and writes is raised to them.
    expect(
      read({
        prompt_tokens: 194,
        total_tokens: 196,
        completion_tokens: 2,
        prompt_tokens_details: { cached_tokens: 0, cache_write_tokens: 100 },
      }),
    ).toEqual([194n, 0n, 100n, 2n, 0n]);
    expect(
      read({
        prompt_tokens: 300,
        completion_tokens: 2,
        cache_creation_input_tokens: 120,
        prompt_tokens_details: { cached_tokens: 50, cache_creation_input_tokens: 90 },
      }),
    ).toEqual([300n, 50n, 120n, 2n, 0n]);
    expect(
      read({
        prompt_tokens: 10,
        completion_tokens: 2,
        prompt_tokens_details: { cached_tokens: 1000, cache_write_tokens: 200 },
      }),
    ).toEqual([1200n, 1000n, 200n, 2n, 0n]);
    // DeepSeek: cache reads as prompt_cache_hit_tokens, beside the misses; OpenAI's field
    // wins when both are there; a prompt below hits + misses is raised to them.
    expect(
      read({
        prompt_tokens: 1200,
        completion_tokens: 30,
        total_tokens: 1230,
        prompt_cache_hit_tokens: 1024,
        prompt_cache_miss_tokens: 176,
      }),
    ).toEqual([1200n, 1024n, 0n, 30n, 0n]);
    expect(
      read({
        prompt_tokens: 1200,
        completion_tokens: 30,
        prompt_cache_hit_tokens: 1024,
        prompt_cache_miss_tokens: 176,
        prompt_tokens_details: { cached_tokens: 1000 },
      }),
    ).toEqual([1200n, 1000n, 0n, 30n, 0n]);
    expect(
      read({
        prompt_tokens: 100,
        completion_tokens: 1,
        prompt_cache_hit_tokens: 1024,
        prompt_cache_miss_tokens: 176,
      }),
    ).toEqual([1200n, 1024n, 0n, 1n, 0n]);
  });
});

describe('cache reads that DeepSeek reports under its own names', () => {
  test('prompt_cache_hit_tokens are charged at the cached-input price, not the input price', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1071, balance: '1' });
    // A long shared prefix, most of it read from DeepSeek's cache.
    const messages = [
      { role: 'user' as const, content: `${'a'.repeat(4096)} [[cache-hit=1024]] [[tokens=30]]` },
    ];
    const prompt = countPromptTokens({ messages });
    expect(prompt).toBe(1036);
    const { data, response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages })
      .withResponse();
    expect(data.usage).toMatchObject({
      prompt_tokens: 1036,
      prompt_cache_hit_tokens: 1024,
      prompt_cache_miss_tokens: 12,
    });
    // (12 x 0.15 + 1024 x 0.075 + 30 x 0.6) / 1M; all 1036 at the input price: 0.0001734.
    const cost = expectedCost(MODELS.mini, { prompt: 1036, cached: 1024, completion: 30 });
    expect(cost.toString()).toBe('0.0000966');
    expect(response.headers.get('x-lingxi-cost')).toBe('0.0000966');
    expect(await balance(userId)).toMatchObject({ available: '0.9999034', held: '0' });
    expect(await usageRows(userId)).toMatchObject([
      {
        prompt_tokens: '1036',
        cached_tokens: '1024',
        completion_tokens: '30',
        cost_usd: '0.0000966',
        estimated: false,
      },
    ]);
  });
});

describe('output that upstream counts outside completion_tokens', () => {
  test('reasoning reported beside completion_tokens (xAI) is charged as reasoning, and recorded so', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1051, balance: '1' });
    const messages = [
      { role: 'user' as const, content: 'think [[tokens=5]] [[reasoning=40]] [[reasoning-apart]]' },
    ];
    const { data, response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'precise', messages })
      .withResponse();
    const prompt = countPromptTokens({ messages });
    // What upstream said: 5 completion tokens, 40 reasoning tokens beside them, in the total.
    expect(data.usage).toMatchObject({ completion_tokens: 5, total_tokens: prompt + 45 });
    const cost = expectedCost(MODELS.precise, { prompt, completion: 45, reasoning: 40 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await usageRows(userId)).toMatchObject([
      {
        prompt_tokens: String(prompt),
        completion_tokens: '45',
        reasoning_tokens: '40',
        cost_usd: cost.toString(),
        estimated: false,
      },
    ]);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });

  test('thinking tokens only in total_tokens (Gemini), streamed, are charged as reasoning', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1052, balance: '1' });
    const messages = [
      { role: 'user' as const, content: 'think [[tokens=5]] [[hidden-reasoning=30]]' },
    ];
    const stream = await sdk(service.url, apiKey).chat.completions.create({
      model: 'precise',
      messages,
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe(completionText(5));
    await stub.waitForIdle();
    await service.http.services.work.drain(5000);
    const prompt = countPromptTokens({ messages });
    const cost = expectedCost(MODELS.precise, { prompt, completion: 35, reasoning: 30 });
    expect(await usageRows(userId)).toMatchObject([
      {
        prompt_tokens: String(prompt),
        completion_tokens: '35',
        reasoning_tokens: '30',
        cost_usd: cost.toString(),
        estimated: false,
        outcome: 'ok',
      },
    ]);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });
});

describe('output that is not content, when upstream sends no usage', () => {
  test('a tool call is charged for its name and arguments, estimated', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1011, balance: '1' });
    const content = 'call f [[tool-call]] [[tokens=40]] [[no-usage]]';
    const { data, response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] })
      .withResponse();
    expect(data.choices[0]?.finish_reason).toBe('tool_calls');
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const completion = Math.ceil(Buffer.byteLength(`f${completionText(40)}`) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await usageRows(userId)).toMatchObject([
      {
        prompt_tokens: String(prompt),
        completion_tokens: String(completion),
        cost_usd: cost.toString(),
        estimated: true,
        outcome: 'ok',
      },
    ]);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });

  test('refusals, reasoning text and function calls count toward the estimate', () => {
    const choices = [
      { index: 0, message: { role: 'assistant', content: null, refusal: 'I cannot help.' } },
      { index: 1, delta: { reasoning_content: 'Think. ' } },
      { index: 2, delta: { reasoning: 'More. ' } },
      { index: 3, message: { content: null, function_call: { name: 'get', arguments: '{}' } } },
      { index: 4, delta: { tool_calls: [{ index: 0, function: { arguments: '{"a":1}' } }] } },
    ];
    const text = 'I cannot help.Think. More. get{}{"a":1}';
    expect(choicesText(choices)).toBe(text);
    expect(estimateTokens(choicesText(choices))).toBe(10n);
  });
});

describe('streaming calls', () => {
  test('chunks arrive as they are generated; the usage chunk reaches only a client that asked for it', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1003, balance: '5' });
    const client = sdk(service.url, apiKey);
    const messages = [{ role: 'user' as const, content: 'count [[tokens=12]] [[delay=5]]' }];
    const prompt = countPromptTokens({ messages });

    const plain = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      stream: true,
    });
    let text = '';
    let sawUsage = false;
    const arrivals: number[] = [];
    for await (const chunk of plain) {
      arrivals.push(performance.now());
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) sawUsage = true;
    }
    expect(text).toBe(Array.from({ length: 12 }, (_, i) => `tok${i} `).join(''));
    expect(sawUsage).toBe(false);
    // Passed through as generated, not buffered: with 5 ms between upstream chunks, they arrive spread out.
    expect(arrivals[arrivals.length - 1]! - arrivals[0]!).toBeGreaterThan(30);

    const withUsage = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: unknown = null;
    for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
    expect(usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: 12 });

    await stub.waitForIdle();
    await service.http.services.work.drain(5000);
    const cost = expectedCost(MODELS.mini, { prompt, completion: 12 });
    expect(await balance(userId)).toMatchObject({
      available: new Decimal(5).sub(cost.mul(2)).toString(),
      held: '0',
    });
    const rows = await usageRows(userId);
    expect(rows.map((r) => [r.stream, r.cost_usd, r.estimated, r.outcome])).toEqual([
      [true, cost.toString(), false, 'ok'],
      [true, cost.toString(), false, 'ok'],
    ]);
    // Upstream was always asked for usage, whatever the client asked.
    const upstreamBodies = stub.requests
      .filter((r) => r.path === '/v1/chat/completions')
      .slice(-2)
      .map((r) => r.body as Record<string, unknown>);
    for (const body of upstreamBodies)
      expect(body['stream_options']).toEqual({ include_usage: true });
  });
});

describe('a provider that ignores `stream: true` and answers one JSON completion', () => {
  test('is charged for its usage, and the SDK streaming client gets the answer as chunks', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1041, balance: '1' });
    const messages = [{ role: 'user' as const, content: 'count [[json-stream]] [[tokens=7]]' }];
    const prompt = countPromptTokens({ messages });
    const { data: stream, response } = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    let text = '';
    let finish: string | null = null;
    let usage: unknown = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(completionText(7));
    expect(finish).toBe('stop');
    expect(usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: 7 });
    const cost = expectedCost(MODELS.mini, { prompt, completion: 7 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    await service.http.services.work.drain(20_000);
    expect(await usageRows(userId)).toMatchObject([
      {
        stream: true,
        cost_usd: cost.toString(),
        estimated: false,
        outcome: 'ok',
        http_status: 200,
      },
    ]);
    expect(await balance(userId)).toMatchObject({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
    });
  });

  test('without usage, a tool call is charged an estimate (marked estimated) and reaches the SDK stream helper', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1042, balance: '1' });
    const content = 'call f [[json-stream]] [[tool-call]] [[tokens=9]] [[no-usage]]';
    const final = await sdk(service.url, apiKey)
      .chat.completions.stream({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] })
      .finalChatCompletion();
    const call = final.choices[0]?.message.tool_calls?.[0];
    expect(call).toMatchObject({
      id: 'call_stub',
      function: { name: 'f', arguments: completionText(9) },
    });
    expect(final.choices[0]?.finish_reason).toBe('tool_calls');
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const completion = Math.ceil(Buffer.byteLength(`f${completionText(9)}`) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion });
    await service.http.services.work.drain(20_000);
    expect(await usageRows(userId)).toMatchObject([
      {
        stream: true,
        prompt_tokens: String(prompt),
        completion_tokens: String(completion),
        cost_usd: cost.toString(),
        estimated: true,
        outcome: 'ok',
      },
    ]);
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });
});

describe('a stream request answered with neither an event stream nor JSON as content type', () => {
  /** A streamed call through the SDK: the text, usage chunk and error it got, and its headers. */
  async function streamedCall(apiKey: string, content: string) {
    let text = '';
    let usage: unknown = null;
    let error: unknown = null;
    let cost: string | null = null;
    try {
      const { data, response } = await sdk(service.url, apiKey)
        .chat.completions.create({
          model: 'gpt-4o-mini',
          messages: [{ role: 'user', content }],
          stream: true,
          stream_options: { include_usage: true },
        })
        .withResponse();
      cost = response.headers.get('x-lingxi-cost');
      for await (const chunk of data) {
        text += chunk.choices[0]?.delta?.content ?? '';
        if (chunk.usage) usage = chunk.usage;
      }
    } catch (e) {
      error = e;
    }
    await service.http.services.work.drain(20_000);
    return { text, usage, error, cost };
  }

  test.each([
    ['text/plain', 1091],
    ['none', 1092],
    ['application/octet-stream', 1093],
  ])(
    'a JSON completion sent as %s: charged its usage, and the client gets it as a stream',
    async (type, telegramId) => {
      const { userId, apiKey } = await userWithKey(service, {
        telegramId,
        balance: '1',
      });
      const content = `count [[json-stream]] [[content-type=${type}]] [[tokens=7]]`;
      const prompt = countPromptTokens({ messages: [{ role: 'user', content }] });
      const cost = expectedCost(MODELS.mini, { prompt, completion: 7 });
      expect(await streamedCall(apiKey, content)).toEqual({
        text: completionText(7),
        usage: expect.objectContaining({ prompt_tokens: prompt, completion_tokens: 7 }),
        error: null,
        cost: cost.toString(),
      });
      expect(await usageRows(userId)).toMatchObject([
        { stream: true, cost_usd: cost.toString(), estimated: false, outcome: 'ok' },
      ]);
      expect(await balance(userId)).toMatchObject({
        available: new Decimal(1).sub(cost).toString(),
        held: '0',
      });
    },
  );

  test('an event stream sent as text/plain is streamed as one, and charged its usage', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1094, balance: '1' });
    const content = 'count [[content-type=text/plain]] [[tokens=5]]';
    const prompt = countPromptTokens({ messages: [{ role: 'user', content }] });
    const cost = expectedCost(MODELS.mini, { prompt, completion: 5 });
    expect(await streamedCall(apiKey, content)).toEqual({
      text: completionText(5),
      usage: expect.objectContaining({ prompt_tokens: prompt, completion_tokens: 5 }),
      error: null,
      // A stream's charge is known only at its end: no header.
      cost: null,
    });
    expect(await usageRows(userId)).toMatchObject([
      { stream: true, cost_usd: cost.toString(), estimated: false, outcome: 'ok' },
    ]);
    expect(await balance(userId)).toMatchObject({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
    });
  });

  test('a body that is neither: 502 upstream_error, the hold released, nothing charged', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1095, balance: '1' });
    const content = 'count [[json-stream]] [[content-type=text/plain]] [[malformed]]';
    const { error, text } = await streamedCall(apiKey, content);
    expect(text).toBe('');
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect([apiError.status, apiError.code, apiError.type]).toEqual([
      502,
      'upstream_error',
      'api_error',
    ]);
    expect(apiError.message).toContain(
      'upstream answered a stream request with `text/plain`, and neither an event stream nor a JSON object; nothing was charged',
    );
    expect(await usageRows(userId)).toMatchObject([
      { stream: true, cost_usd: '0', outcome: 'upstream_malformed', http_status: 502 },
    ]);
    expect(await balance(userId)).toEqual({
      currency: 'USD',
      available: '1',
      posted: '1',
      held: '0',
    });
  });
});

describe('an estimate never exceeds its hold', () => {
  test('the completion estimate is capped at the output cap upstream was given', async () => {
    // "tokK " is 5 bytes a token: 40 tokens estimate as 50 at four bytes a token.
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1043, balance: '1' });
    const content = 'count [[tokens=40]] [[no-usage]]';
    const { response } = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content }],
        max_tokens: 40,
      })
      .withResponse();
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion: 40 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await usageRows(userId)).toMatchObject([
      { completion_tokens: '40', cost_usd: cost.toString(), estimated: true },
    ]);
  });
});

describe('usage far above the hold', () => {
  /** Calls charged more than their hold, as /metrics shows them. */
  async function chargedOverHoldCount(): Promise<number> {
    const text = await (await fetch(`${service.url}/metrics`)).text();
    const line = text
      .split('\n')
      .find(
        (l) =>
          l.startsWith('lingxi_gateway_charged_over_hold_total{') &&
          l.includes('model="gpt-4o-mini"') &&
          l.includes('provider="stub"'),
      );
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  }

  const OVER_HOLD = /charged more than its hold/;

  test('10^15 completion tokens reported for a 256-token cap: charged as reported, the shortfall owed, counted and logged', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1801, balance: '1' });
    const messages = [{ role: 'user' as const, content: 'absurd [[tokens=3]] [[sse=usage-huge]]' }];
    const counted = await chargedOverHoldCount();
    const warn = vi.spyOn(service.runtime.logger, 'warn');
    try {
      const { data, response } = await sdk(service.url, apiKey)
        .chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true })
        .withResponse();
      const requestId = response.headers.get('x-request-id');
      let text = '';
      for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? '';
      expect(text).toBe(completionText(3));
      await service.http.services.work.drain(5000);

      // The policy is unchanged: usage as reported, the balance to 0, the rest owed.
      const prompt = countPromptTokens({ messages });
      const cost = expectedCost(MODELS.mini, { prompt, completion: 10 ** 15 });
      const [row] = await usageRows(userId);
      expect(row).toMatchObject({
        cost_usd: cost.toString(),
        outcome: 'ok',
        request_id: requestId,
      });
      expect(await balance(userId)).toMatchObject({ available: '0', held: '0' });

      expect(await chargedOverHoldCount()).toBe(counted + 1);
      expect(warn).toHaveBeenCalledWith(
        expect.objectContaining({
          requestId,
          model: 'gpt-4o-mini',
          provider: 'stub',
          costUsd: cost.toString(),
          shortfallUsd: cost.sub(1).toString(),
          promptTokens: String(prompt),
          completionTokens: String(10 ** 15),
          heldUsd: expect.stringMatching(/^0\.\d+$/),
        }),
        expect.stringMatching(OVER_HOLD),
      );
    } finally {
      warn.mockRestore();
    }
  });

  test('a JSON answer whose prompt is far above what its bytes allow is counted too; a normal call is not', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 1802, balance: '1' });
    const client = sdk(service.url, apiKey);
    const warn = vi.spyOn(service.runtime.logger, 'warn');
    try {
      const counted = await chargedOverHoldCount();
      await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'normal [[tokens=3]]' }],
      });
      expect(await chargedOverHoldCount()).toBe(counted);
      expect(warn).not.toHaveBeenCalledWith(expect.anything(), expect.stringMatching(OVER_HOLD));

      const { response } = await client.chat.completions
        .create({
          model: 'gpt-4o-mini',
          messages: [
            { role: 'user', content: 'hidden prompt [[tokens=3]] [[prompt-tokens=100000]]' },
          ],
        })
        .withResponse();
      expect(await chargedOverHoldCount()).toBe(counted + 1);
      expect(warn).toHaveBeenCalledWith(
        expect.objectContaining({
          requestId: response.headers.get('x-request-id'),
          promptTokens: '100000',
          completionTokens: '3',
          shortfallUsd: '0',
        }),
        expect.stringMatching(OVER_HOLD),
      );
    } finally {
      warn.mockRestore();
    }
  });
});

describe('other endpoints', () => {
  test('embeddings of token ids, without usage from upstream, are charged one token per id (within the hold)', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1031, balance: '1' });
    const ids = Array.from({ length: 1000 }, (_, i) => 100_000 + i);
    stub.setDefault('[[no-usage]]');
    try {
      const { response } = await sdk(service.url, apiKey)
        .embeddings.create({ model: 'text-embedding-3-small', input: [ids, ids.slice(0, 500)] })
        .withResponse();
      // 1500 ids are 1500 tokens: the hold was for 1500 + 16; "100000,100001,..." is 7 bytes an id.
      const cost = expectedCost(MODELS.embed, { prompt: 1500, completion: 0 });
      expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
      expect(await usageRows(userId)).toMatchObject([
        { prompt_tokens: '1500', cost_usd: cost.toString(), estimated: true, outcome: 'ok' },
      ]);
      expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
    } finally {
      stub.setDefault({});
    }
  });

  test('embeddings are metered on prompt tokens', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 1004, balance: '1' });
    const client = sdk(service.url, apiKey);
    const { data, response } = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: ['alpha beta', 'gamma'] })
      .withResponse();
    expect(data.data).toHaveLength(2);
    const cost = new Decimal(data.usage.prompt_tokens).mul(MODELS.embed.input).div(1_000_000);
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect((await balance(userId)).available).toBe(new Decimal(1).sub(cost).toString());
  });

  test('GET /v1/models lists the priced models with their prices', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 1005 });
    const models = await sdk(service.url, apiKey).models.list();
    const ids = models.data.map((m) => m.id);
    expect(ids).toEqual(['gpt-4o-mini', 'precise', 'text-embedding-3-small']);
    const precise = models.data.find((m) => m.id === 'precise') as unknown as {
      pricing: Record<string, string>;
    };
    expect(precise.pricing).toMatchObject({
      currency: 'USD',
      input: '0.123456789012',
      cached_input: '0.000000000001',
      output: '3.141592653589',
      reasoning: '7.000000000007',
    });
  });

  test('GET /metrics reports requests, latency, charges and open holds', async () => {
    const text = await (await fetch(`${service.url}/metrics`)).text();
    expect(text).toMatch(
      /lingxi_gateway_calls_total\{endpoint="chat.completions",model="gpt-4o-mini",outcome="ok"\} \d+/,
    );
    expect(text).toMatch(/lingxi_gateway_call_duration_seconds_bucket/);
    expect(text).toMatch(/lingxi_gateway_charged_usd_total\{model="gpt-4o-mini"\} [0-9.e-]+/);
    expect(text).toMatch(/lingxi_ledger_holds_open 0/);
  });
});

describe('gateway.bytesPerTokenMin', () => {
  let stack: GatewayStack;
  useGatewayStack(
    (ready) => (stack = ready),
    (config) => ({ ...config, gateway: { bytesPerTokenMin: 4 } }),
  );

  test('bounds the prompt tokens of the hold: a prompt of B bytes holds ceil(B / 4) + 16 tokens', async () => {
    const { apiKey } = await userWithKey(stack.service, { telegramId: 1021 });
    const messages = [{ role: 'user' as const, content: 'x'.repeat(401) }];
    const error = await sdk(stack.service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 10 })
      .catch((e: unknown) => e as Error);
    const promptTokensMax = Math.ceil(Buffer.byteLength(JSON.stringify({ messages })) / 4) + 16;
    const maxCost = new Decimal(promptTokensMax)
      .mul(MODELS.mini.input)
      .add(new Decimal(10).mul(MODELS.mini.output))
      .div(1_000_000);
    expect(String(error)).toContain(`this call may cost up to ${maxCost.toString()} USD`);
  });
});

describe('gateway.bytesPerTokenMin above 4, when upstream sends no usage', () => {
  let stack: GatewayStack;
  useGatewayStack(
    (ready) => (stack = ready),
    (config) => ({ ...config, gateway: { bytesPerTokenMin: 8 } }),
  );

  test("the prompt estimate is capped at the hold's bound, so the charge stays within the hold", async () => {
    const messages = [
      { role: 'user' as const, content: `${'x'.repeat(4000)} [[tokens=5]] [[no-usage]]` },
    ];
    const promptTokensMax = Math.ceil(Buffer.byteLength(JSON.stringify({ messages })) / 8) + 16;
    const maxCost = expectedCost(MODELS.mini, { prompt: promptTokensMax, completion: 10 });
    // Embeddings too: a string of B bytes holds ceil(B / 8) + 16 tokens.
    const input = `${'y'.repeat(4000)} [[no-usage]]`;
    const embeddingTokensMax = Math.ceil(Buffer.byteLength(input) / 8) + 16;
    const embeddingMaxCost = expectedCost(MODELS.embed, {
      prompt: embeddingTokensMax,
      completion: 0,
    });
    // Exactly the calls' holds: a charge above its hold would leave a shortfall on a later call.
    const { userId, apiKey } = await userWithKey(stack.service, {
      telegramId: 1044,
      balance: maxCost.mul(2).add(embeddingMaxCost).toString(),
    });
    const client = sdk(stack.service.url, apiKey);
    const { response } = await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages, max_tokens: 10 })
      .withResponse();
    const completion = Math.ceil(Buffer.byteLength(completionText(5)) / 4);
    const cost = expectedCost(MODELS.mini, { prompt: promptTokensMax, completion });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(cost.lte(maxCost)).toBe(true);
    const { rows } = await stack.database.pool.query(
      `select prompt_tokens::text, cost_usd::text, shortfall_usd::text, estimated
         from usage_records where user_id = $1`,
      [userId],
    );
    expect(rows).toEqual([
      {
        prompt_tokens: String(promptTokensMax),
        cost_usd: cost.toString(),
        shortfall_usd: '0',
        estimated: true,
      },
    ]);

    // Streamed, the same.
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages,
      max_tokens: 10,
      stream: true,
    });
    for await (const chunk of stream) void chunk;
    await stack.service.http.services.work.drain(20_000);
    const streamed = await stack.database.pool.query(
      `select prompt_tokens::text, shortfall_usd::text, estimated
         from usage_records where user_id = $1 and stream`,
      [userId],
    );
    expect(streamed.rows).toEqual([
      { prompt_tokens: String(promptTokensMax), shortfall_usd: '0', estimated: true },
    ]);

    await client.embeddings.create({ model: 'text-embedding-3-small', input });
    const embedded = await stack.database.pool.query(
      `select prompt_tokens::text, estimated from usage_records
        where user_id = $1 and endpoint = 'embeddings'`,
      [userId],
    );
    expect(embedded.rows).toEqual([{ prompt_tokens: String(embeddingTokensMax), estimated: true }]);
  });
});

describe('output caps', () => {
  test('a call that sends both max_completion_tokens and max_tokens holds for the larger', async () => {
    // Both go upstream, and a provider may honour either one.
    const { apiKey } = await userWithKey(service, { telegramId: 1022 });
    const messages = [{ role: 'user' as const, content: 'hi' }];
    const error = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages,
        max_completion_tokens: 5,
        max_tokens: 40,
      })
      .catch((e: unknown) => e as Error);
    const promptTokensMax = Buffer.byteLength(JSON.stringify({ messages })) + 16;
    const maxCost = new Decimal(promptTokensMax)
      .mul(MODELS.mini.input)
      .add(new Decimal(40).mul(MODELS.mini.output))
      .div(1_000_000);
    expect(String(error)).toContain(`this call may cost up to ${maxCost.toString()} USD`);
  });
});

describe('prompt-cache writes', () => {
  let stack: GatewayStack;
  // 1.25x input, as Anthropic bills a 5-minute cache write; gpt-4o-mini has no such price.
  const PRECISE = { ...MODELS.precise, cacheWrite: '0.154320986265' };
  useGatewayStack(
    (ready) => (stack = ready),
    (config) => ({
      ...config,
      gateway: { bytesPerTokenMin: 4 },
      models: config.models!.map((model) =>
        model.id === 'precise' ? { ...model, pricePer1M: PRECISE } : model,
      ),
    }),
  );
  const rows = async (userId: string) =>
    (
      await stack.database.pool.query(
        `select prompt_tokens::text as prompt, cached_tokens::text as cached,
                cache_write_tokens::text as cache_write, completion_tokens::text as completion,
                cost_usd::text as cost, estimated
           from usage_records where user_id = $1 order by id`,
        [userId],
      )
    ).rows;

  test('are charged at the model’s cache-write price and recorded on the usage row', async () => {
    const { userId, apiKey } = await userWithKey(stack.service, { telegramId: 1061, balance: '1' });
    const content = 'cache [[prompt-tokens=100]] [[cached=10]] [[cache-write=60]] [[tokens=5]]';
    const { response } = await sdk(stack.service.url, apiKey)
      .chat.completions.create({ model: 'precise', messages: [{ role: 'user', content }] })
      .withResponse();
    const cost = expectedCost(PRECISE, { prompt: 100, cached: 10, cacheWrite: 60, completion: 5 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await rows(userId)).toEqual([
      {
        prompt: '100',
        cached: '10',
        cache_write: '60',
        completion: '5',
        cost: cost.toString(),
        estimated: false,
      },
    ]);
  });

  test('without a cache-write price they bill at the input price (never free); Anthropic’s name counts, streamed too', async () => {
    const { userId, apiKey } = await userWithKey(stack.service, { telegramId: 1062, balance: '1' });
    const content = 'cache [[prompt-tokens=100]] [[cache-creation=70]] [[tokens=3]]';
    const stream = await sdk(stack.service.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content }],
      stream: true,
    });
    for await (const _chunk of stream) void _chunk;
    await stack.stub.waitForIdle();
    await stack.service.http.services.work.drain(5000);
    const cost = expectedCost(MODELS.mini, { prompt: 100, cacheWrite: 70, completion: 3 });
    expect(cost.toString()).toBe(
      expectedCost(MODELS.mini, { prompt: 100, completion: 3 }).toString(),
    );
    expect(await rows(userId)).toEqual([
      {
        prompt: '100',
        cached: '0',
        cache_write: '70',
        completion: '3',
        cost: cost.toString(),
        estimated: false,
      },
    ]);
  });

  test('the hold counts every prompt token at the dearest prompt price, the cache-write price included', async () => {
    const { apiKey } = await userWithKey(stack.service, { telegramId: 1063 });
    const messages = [{ role: 'user' as const, content: 'x'.repeat(401) }];
    const error = await sdk(stack.service.url, apiKey)
      .chat.completions.create({ model: 'precise', messages, max_completion_tokens: 10 })
      .catch((e: unknown) => e as Error);
    const promptTokensMax = Math.ceil(Buffer.byteLength(JSON.stringify({ messages })) / 4) + 16;
    const maxCost = new Decimal(promptTokensMax)
      .mul(PRECISE.cacheWrite)
      .add(new Decimal(10).mul(PRECISE.reasoning))
      .div(1_000_000);
    expect(String(error)).toContain(`this call may cost up to ${maxCost.toString()} USD`);
  });

  test('GET /v1/models shows the cache-write price (the input price when the model sets none)', async () => {
    const { apiKey } = await userWithKey(stack.service, { telegramId: 1064 });
    const models = (await sdk(stack.service.url, apiKey).models.list()).data as unknown as Array<{
      id: string;
      pricing: Record<string, string>;
    }>;
    expect(models.find((m) => m.id === 'precise')?.pricing).toMatchObject({
      input: PRECISE.input,
      cache_write: PRECISE.cacheWrite,
    });
    expect(models.find((m) => m.id === 'gpt-4o-mini')?.pricing).toMatchObject({
      input: MODELS.mini.input,
      cache_write: MODELS.mini.input,
    });
  });

  test('a price version from before cache-write prices is kept while none is set, and a new one starts when it is', async () => {
    const { db, close } = connect(stack.database.url, 2);
    try {
      // As the migration leaves a version that existed before it: no cache-write price.
      const {
        rows: [old],
      } = await stack.database.pool.query(
        `insert into model_prices (model_id, provider, upstream_model, input_per_1m,
                                   cached_input_per_1m, output_per_1m, reasoning_per_1m)
         values ('legacy', 'stub', 'legacy', 2, 1, 8, 8) returning id::text`,
      );
      const model = {
        id: 'legacy',
        provider: 'stub',
        upstreamModel: 'legacy',
        kind: 'chat' as const,
        pricePer1M: { input: '2', cachedInput: '1', output: '8' },
        maxOutputTokensDefault: 16,
        maxOutputTokensLimit: 16,
        imageTokensMax: 50_000,
      };
      const same = (await syncPrices(db, [model])).get('legacy')!;
      expect(same.id).toBe(old.id);
      expect(same.cacheWritePer1M.toString()).toBe('2');
      const priced = { ...model, pricePer1M: { ...model.pricePer1M, cacheWrite: '2.5' } };
      const next = (await syncPrices(db, [priced])).get('legacy')!;
      expect(next.id).not.toBe(old.id);
      expect(next.cacheWritePer1M.toString()).toBe('2.5');
      // The old version is as it was: append-only.
      const { rows } = await stack.database.pool.query(
        `select id::text, cache_write_per_1m::text from model_prices where model_id = 'legacy' order by id`,
      );
      expect(rows).toEqual([
        { id: old.id, cache_write_per_1m: null },
        { id: next.id, cache_write_per_1m: '2.5' },
      ]);
    } finally {
      await close();
    }
  });
});
