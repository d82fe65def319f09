import { describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { admin, userWithKey, type TestService } from '../support/service.js';
import { choicesText, estimateTokens } from '../../src/gateway/tokens.js';
import { readUsage } from '../../src/gateway/upstream.js';
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
      completionTokens: 9007199254740993n,
      reasoningTokens: 0n,
    });
    // Absent counts (an embedding has no completion tokens) and null details are 0.
    expect(readUsage({ prompt_tokens: 8, total_tokens: 8, prompt_tokens_details: null })).toEqual({
      promptTokens: 8n,
      cachedTokens: 0n,
      completionTokens: 0n,
      reasoningTokens: 0n,
    });
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
