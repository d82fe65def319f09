import { describe, expect, test } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { Decimal } from '../../ledger/index.js';
import { completionText, countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import { expectedCost, MODELS, sdk, useGatewayStack } from './fixtures.js';

/** Requests the official SDK sends as OpenAI documents them, through the gateway. */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;

useGatewayStack(
  (stack) => ({ database, stub, service } = stack),
  (config) => ({
    ...config,
    models: [
      ...config.models!,
      {
        // A reasoning model by its routed name (OpenRouter style).
        id: 'routed-o3-mini',
        provider: 'stub',
        upstreamModel: 'openai/o3-mini',
        pricePer1M: MODELS.precise,
        maxOutputTokensDefault: 256,
        maxOutputTokensLimit: 4096,
      },
    ],
  }),
);

function lastUpstreamBody(): Record<string, unknown> {
  return stub.requests.at(-1)!.body as Record<string, unknown>;
}

async function usageRow(userId: string) {
  const { rows } = await database.pool.query<{
    completion_tokens: string;
    cost_usd: string;
    shortfall_usd: string;
    held_usd: string;
  }>(
    `select u.completion_tokens::text, u.cost_usd::text, u.shortfall_usd::text, h.amount::text as held_usd
       from usage_records u left join ledger_holds h on h.id = u.hold_id
      where u.user_id = $1 order by u.id desc limit 1`,
    [userId],
  );
  return rows[0]!;
}

/**
 * One uncapped call to a reasoning model priced as `precise`: the client sees the stub's
 * tokens, and the cost header and usage row say exactly tokens x prices. Returns what upstream
 * was sent.
 */
async function reasoningCallCharged(
  model: string,
  telegramId: number,
  generated: { tokens: number; reasoning: number },
): Promise<Record<string, unknown>> {
  const { userId, apiKey } = await userWithKey(service, { telegramId, balance: '1' });
  const content = `Think. [[tokens=${generated.tokens}]] [[reasoning=${generated.reasoning}]]`;
  const messages = [{ role: 'user' as const, content }];
  const { data, response } = await sdk(service.url, apiKey)
    .chat.completions.create({ model, messages })
    .withResponse();
  const completion = generated.tokens + generated.reasoning;
  expect(data.usage?.completion_tokens).toBe(completion);
  const body = lastUpstreamBody();
  const cost = expectedCost(MODELS.precise, {
    prompt: countPromptTokens({ messages }),
    completion,
    reasoning: generated.reasoning,
  });
  expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
  expect(await usageRow(userId)).toMatchObject({ cost_usd: cost.toString(), shortfall_usd: '0' });
  return body;
}

describe('the output cap the gateway adds', () => {
  test('a reasoning model (o3-mini upstream) called with no cap gets max_completion_tokens, which it accepts, not max_tokens, which OpenAI refuses', async () => {
    const body = await reasoningCallCharged('precise', 860_001, { tokens: 9, reasoning: 4 });
    expect(body['max_completion_tokens']).toBe(256);
    expect(body).not.toHaveProperty('max_tokens');
  });

  test('streamed too', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 860_002, balance: '1' });
    const stream = await sdk(service.url, apiKey).chat.completions.create({
      model: 'precise',
      messages: [{ role: 'user', content: 'Think. [[tokens=3]]' }],
      stream: true,
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('tok0 tok1 tok2 ');
    expect(lastUpstreamBody()['max_completion_tokens']).toBe(256);
  });

  test('a reasoning model by its routed name (openai/o3-mini) gets max_completion_tokens too, not a 400', async () => {
    const body = await reasoningCallCharged('routed-o3-mini', 860_004, { tokens: 5, reasoning: 2 });
    expect(body['model']).toBe('openai/o3-mini');
    expect(body['max_completion_tokens']).toBe(256);
    expect(body).not.toHaveProperty('max_tokens');
  });

  test('other models still get max_tokens (what every OpenAI-compatible provider knows)', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 860_003, balance: '1' });
    await sdk(service.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi [[tokens=2]]' }],
    });
    const body = lastUpstreamBody();
    expect(body['max_tokens']).toBe(256);
    expect(body).not.toHaveProperty('max_completion_tokens');
  });
});

describe('images in the prompt', () => {
  const prompt = 2_833 + 8 * 5_667; // gpt-4o-mini, high detail, 768x2048: OpenAI's dearest image
  const imageCall = (maxTokens: number) => ({
    model: 'gpt-4o-mini',
    max_tokens: maxTokens,
    messages: [
      {
        role: 'user' as const,
        content: [
          { type: 'text' as const, text: `Describe. [[tokens=4]] [[prompt-tokens=${prompt}]]` },
          {
            type: 'image_url' as const,
            image_url: { url: 'https://example.com/768x2048.png', detail: 'high' as const },
          },
        ],
      },
    ],
  });

  test('a balance that cannot pay what an image may bill is refused (402, nothing sent), not served on credit', async () => {
    const cost = expectedCost(MODELS.mini, { prompt, completion: 4 });
    const balance = '0.007';
    expect(cost.gt(balance)).toBe(true);
    const { userId, apiKey } = await userWithKey(service, { telegramId: 860_011, balance });
    const sent = stub.requests.length;
    const error = await sdk(service.url, apiKey)
      .chat.completions.create(imageCall(16))
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 402, code: 'insufficient_balance' });
    expect(stub.requests.length).toBe(sent);
    const { rows } = await database.pool.query(
      `select count(*)::int as n from usage_records where user_id = $1 and shortfall_usd > 0`,
      [userId],
    );
    expect(rows[0].n).toBe(0);
  });

  test('with enough balance the image call is charged exactly, all within its hold', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 860_012, balance: '1' });
    const { response } = await sdk(service.url, apiKey)
      .chat.completions.create(imageCall(16))
      .withResponse();
    const cost = expectedCost(MODELS.mini, { prompt, completion: 4 });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    expect(await usageRow(userId)).toMatchObject({ cost_usd: cost.toString(), shortfall_usd: '0' });
  });
});

describe('n', () => {
  test("n up to OpenAI's limit of 128 is accepted and passed upstream; above it, a 400 naming n", async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 860_021, balance: '1' });
    await sdk(service.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      n: 20,
      max_tokens: 8,
      messages: [{ role: 'user', content: 'Pick. [[tokens=2]]' }],
    });
    expect(lastUpstreamBody()).toMatchObject({ n: 20, max_tokens: 8 });
    const error = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        n: 129,
        messages: [{ role: 'user', content: 'Pick.' }],
      })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 400, param: 'n' });
  });
});

describe('Predicted Outputs', () => {
  // 4000 bytes: the stub counts 1000 prediction tokens; all of them rejected unless [[accepted]].
  const prediction = { type: 'content' as const, content: 'x'.repeat(4000) };
  const predictionTokens = 1000;

  test('the hold covers the prediction: rejected tokens are billed as output on top of max_tokens', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 860_031 });
    const messages = [{ role: 'user' as const, content: 'Edit. [[tokens=10]]' }];
    const error = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 10, prediction })
      .catch((e: unknown) => e as Error);
    const promptTokensMax = Buffer.byteLength(JSON.stringify({ messages })) + 16;
    const outputTokensMax = 10 + Buffer.byteLength(JSON.stringify(prediction));
    const maxCost = new Decimal(promptTokensMax)
      .mul(MODELS.mini.input)
      .add(new Decimal(outputTokensMax).mul(MODELS.mini.output))
      .div(1_000_000);
    expect(error).toMatchObject({ status: 402, code: 'insufficient_balance' });
    expect(String(error)).toContain(`this call may cost up to ${maxCost.toString()} USD`);
  });

  test('rejected prediction tokens are charged once, as output (inside completion_tokens), all within the hold', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 860_032, balance: '1' });
    const messages = [{ role: 'user' as const, content: 'Edit. [[tokens=10]] [[accepted=4]]' }];
    const { data, response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages, max_tokens: 10, prediction })
      .withResponse();
    expect(data.usage?.completion_tokens_details).toMatchObject({
      accepted_prediction_tokens: 4,
      rejected_prediction_tokens: predictionTokens - 4,
    });
    const completion = 10 + predictionTokens - 4;
    expect(data.usage?.completion_tokens).toBe(completion);
    const cost = expectedCost(MODELS.mini, { prompt: countPromptTokens({ messages }), completion });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    const row = await usageRow(userId);
    expect(row).toMatchObject({
      completion_tokens: String(completion),
      cost_usd: cost.toString(),
      shortfall_usd: '0',
    });
    // What the call cost was held before it went upstream: a balance that covers the hold covers the call.
    expect(new Decimal(row.held_usd).gte(cost)).toBe(true);
  });

  test('without usage from upstream, the estimate counts the prediction as rejected (what the provider may bill)', async () => {
    const { userId, apiKey } = await userWithKey(service, { telegramId: 860_033, balance: '1' });
    const content = 'Edit. [[tokens=10]] [[no-usage]]';
    const { response } = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content }],
        max_tokens: 10,
        prediction,
      })
      .withResponse();
    const completion = Math.ceil(Buffer.byteLength(completionText(10)) / 4) + Math.ceil(4000 / 4);
    const cost = expectedCost(MODELS.mini, {
      prompt: Math.ceil(Buffer.byteLength(content) / 4),
      completion,
    });
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());
    const row = await usageRow(userId);
    expect(row).toMatchObject({
      completion_tokens: String(completion),
      cost_usd: cost.toString(),
      shortfall_usd: '0',
    });
    // What the call cost was held before it went upstream: a balance that covers the hold covers the call.
    expect(new Decimal(row.held_usd).gte(cost)).toBe(true);
  });
});

describe('features without a price', () => {
  test('text-only modalities are served (only audio and web search are refused, with 400 feature_not_priced)', async () => {
    const { apiKey } = await userWithKey(service, { telegramId: 860_041, balance: '1' });
    const { response } = await sdk(service.url, apiKey)
      .chat.completions.create({
        model: 'gpt-4o-mini',
        modalities: ['text'],
        messages: [{ role: 'user', content: 'hi [[tokens=2]]' }],
      })
      .withResponse();
    expect(response.status).toBe(200);
    expect(lastUpstreamBody()['modalities']).toEqual(['text']);
  });
});
