import { describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { completionText, countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import { callState, expectedCost, MODELS, sdk, useGatewayStack } from './fixtures.js';

/**
 * A streaming client that wants its answer for less leaves the stream early: once it has
 * every word (at the `finish_reason`, before the usage chunk), or midway after a provider
 * already reported part of its usage. The provider bills what it generated either way, so
 * the call is charged for it: its usage when the provider still sends it, never less than
 * the words the client received.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let telegramId = 8300;

useGatewayStack((stack) => ({ database, stub, service } = stack));

const ask = (content: string) => [{ role: 'user' as const, content }];

async function newUser() {
  telegramId += 1;
  return userWithKey(service, { telegramId, balance: '1' });
}

/** The user's money, usage rows and pending holds, once every call has ended. */
const state = (userId: string) =>
  callState(
    { database, stub, service },
    userId,
    `outcome, cost_usd::text as cost, estimated,
            prompt_tokens::text as prompt, completion_tokens::text as completion`,
    10_000,
  );

/**
 * Streams `content` through the SDK and leaves (the SDK aborts its request) after the chunk
 * `leaveAt` says; returns the text received.
 */
async function streamThenLeave(
  apiKey: string,
  content: string,
  leaveAt: (chunk: { finish: string | null; received: number }) => boolean,
  options: { n?: number } = {},
): Promise<string> {
  const stream = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: ask(content),
    stream: true,
    ...(options.n ? { n: options.n } : {}),
  });
  let text = '';
  let received = 0;
  for await (const chunk of stream) {
    received += 1;
    text += chunk.choices.map((c) => c.delta.content ?? '').join('');
    const finish = chunk.choices[0]?.finish_reason ?? null;
    if (leaveAt({ finish, received })) break;
  }
  return text;
}

describe('a client that leaves once it has the whole answer, before the usage chunk', () => {
  test('is charged the usage the provider reports after it left (its reasoning tokens included), not an estimate of the words it saw', async () => {
    const { userId, apiKey } = await newUser();
    // 200 reasoning tokens the client never sees, 3 words; each event 300 ms after the last,
    // so the client is gone before the usage chunk is sent.
    const content = 'think hard [[tokens=3]] [[reasoning=200]] [[delay=300]]';
    const text = await streamThenLeave(apiKey, content, ({ finish }) => finish !== null);
    expect(text).toBe(completionText(3));

    const prompt = countPromptTokens({ messages: ask(content) });
    const cost = expectedCost(MODELS.mini, { prompt, completion: 203 });
    const after = await state(userId);
    expect(after).toMatchObject({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          cost: cost.toString(),
          estimated: false,
          prompt: String(prompt),
          completion: '203',
        },
      ],
    });
    // It left before [DONE]; the row may say so, or (on a slow machine) that the stream ended.
    expect(['client_disconnected', 'ok']).toContain(after.rows[0].outcome);
  });

  test('with n=2, leaving when only the first choice has finished: charged for what was generated, nothing left held', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'two answers [[tokens=10]] [[delay=20]] [[sse=two-choices]]';
    // The first `finish_reason` is choice 0's; choice 1 is still being generated.
    const text = await streamThenLeave(apiKey, content, ({ finish }) => finish !== null, { n: 2 });
    expect(text.length).toBeGreaterThan(0);
    const after = await state(userId);
    const upstream = stub.requests.find((r) => JSON.stringify(r.body).includes('two answers'))!;
    expect(upstream.clientDisconnected).toBe(true);
    expect(after).toMatchObject({ held: '0', pendingHolds: 0 });
    expect(after.rows).toHaveLength(1);
    expect(after.rows[0]).toMatchObject({ outcome: 'client_disconnected' });
    expect(new Decimal(after.rows[0].cost).gt(0)).toBe(true);
  });
});

describe('a client that leaves midway, after the provider reported part of the usage', () => {
  // `usage-split`: the prompt's tokens on the first chunk (completion 0), the completion's
  // on the last; `usage-twice`: a running usage after the first word (completion 1).
  for (const shape of ['usage-split', 'usage-twice'] as const) {
    test(`[[sse=${shape}]]: charged at least for the words it received (estimated), not the early report's completion`, async () => {
      const { userId, apiKey } = await newUser();
      const content = `leave midway ${shape} [[tokens=60]] [[delay=20]] [[sse=${shape}]]`;
      const text = await streamThenLeave(apiKey, content, ({ received }) => received === 12);
      expect(text.length).toBeGreaterThan(0);

      const after = await state(userId);
      expect(after).toMatchObject({ held: '0', pendingHolds: 0 });
      expect(after.rows).toHaveLength(1);
      const row = after.rows[0];
      // At least the words the client received, about four bytes a token.
      expect(Number(row.completion)).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(text) / 4));
      expect(row).toMatchObject({
        outcome: 'client_disconnected',
        estimated: true,
        // The prompt as the provider reported it.
        prompt: String(countPromptTokens({ messages: ask(content) })),
      });
      const cost = expectedCost(MODELS.mini, {
        prompt: Number(row.prompt),
        completion: Number(row.completion),
      });
      expect(row.cost).toBe(cost.toString());
      expect(after.available).toBe(new Decimal(1).sub(cost).toString());
    });
  }
});
