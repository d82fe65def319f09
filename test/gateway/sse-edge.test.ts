import OpenAI from 'openai';
import type { ChatCompletionChunk } from 'openai/resources/chat/completions';
import { describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { admin, userWithKey, type TestService } from '../support/service.js';
import { completionText, countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import { LONG_EVENT_TEXT, MULTIBYTE_SUFFIX } from '../support/upstream-stub/sse-shapes.js';
import {
  callState,
  expectedCost,
  MODELS,
  sdk,
  useGatewayStack,
  type GatewayStack,
} from './fixtures.js';

/**
 * Streams whose SSE is shaped as some providers (or the proxies in front of them) send it:
 * other line ends and fields, events cut anywhere, usage early, twice or odd, `[DONE]` twice,
 * missing or followed by more. Whatever the shape, the client (the official SDK) gets every
 * chunk upstream sent before `[DONE]`, in order and intact; the call is charged once, for
 * upstream's usage (or an estimate, marked so); and no hold is left pending.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let telegramId = 7100;

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
  );

/** A streamed call through the SDK: every chunk it yielded, and the error it threw, if any. */
async function streamed(apiKey: string, content: string, options: { includeUsage?: boolean } = {}) {
  const chunks: ChatCompletionChunk[] = [];
  let error: unknown = null;
  try {
    const stream = await sdk(service.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: ask(content),
      stream: true,
      ...(options.includeUsage ? { stream_options: { include_usage: true } } : {}),
    });
    for await (const chunk of stream) chunks.push(chunk);
  } catch (e) {
    error = e;
  }
  const text = chunks
    .flatMap((chunk) => chunk.choices.map((choice) => choice.delta.content ?? ''))
    .join('');
  return { chunks, error, text };
}

/** The user's 1 USD less exactly `completion` tokens and the prompt of `content`, one row `outcome`. */
async function expectCharged(userId: string, content: string, completion: number, outcome = 'ok') {
  const prompt = countPromptTokens({ messages: ask(content) });
  const cost = expectedCost(MODELS.mini, { prompt, completion });
  expect(await state(userId)).toEqual({
    available: new Decimal(1).sub(cost).toString(),
    held: '0',
    pendingHolds: 0,
    rows: [
      {
        outcome,
        cost: cost.toString(),
        estimated: false,
        prompt: String(prompt),
        completion: String(completion),
      },
    ],
  });
}

describe('SSE framing: the client gets every chunk intact, the call is charged its usage', () => {
  const shapes = ['crlf', 'no-space', 'multiline', 'comments', 'fields', 'split-utf8'] as const;
  for (const shape of shapes) {
    for (const includeUsage of [false, true]) {
      test(`[[sse=${shape}]], include_usage ${includeUsage}`, async () => {
        const { userId, apiKey } = await newUser();
        // A pause before each write, so each reaches the gateway as a read of its own.
        const content = `framing [[tokens=3]] [[sse=${shape}]] [[delay=2]]`;
        const { chunks, error, text } = await streamed(apiKey, content, { includeUsage });
        expect(error).toBeNull();
        const expected =
          shape === 'split-utf8'
            ? ['tok0', 'tok1', 'tok2'].map((t) => `${t}${MULTIBYTE_SUFFIX} `).join('')
            : completionText(3);
        expect(text).toBe(expected);
        // role, 3 tokens, finish_reason; then the usage chunk only if asked for.
        expect(chunks.slice(0, 5).map((c) => c.choices[0]?.finish_reason ?? null)).toEqual([
          null,
          null,
          null,
          null,
          'stop',
        ]);
        const usageChunks = chunks.filter((c) => c.usage != null);
        expect(chunks).toHaveLength(includeUsage ? 6 : 5);
        expect(usageChunks.map((c) => c.usage?.completion_tokens)).toEqual(includeUsage ? [3] : []);
        await expectCharged(userId, content, 3);
      });
    }
  }
});

test('a 1 MB event of multi-byte text arrives whole through the stream helper, charged its usage', async () => {
  const { userId, apiKey } = await newUser();
  const content = 'long [[tokens=3]] [[sse=long-event]]';
  const stream = sdk(service.url, apiKey).chat.completions.stream({
    model: 'gpt-4o-mini',
    messages: ask(content),
  });
  const completion = await stream.finalChatCompletion();
  expect(completion.choices[0]?.message.content).toBe(`tok0 ${LONG_EVENT_TEXT}tok1 tok2 `);
  await expectCharged(userId, content, 3);
});

describe('order and repetition', () => {
  test('the usage chunk before the last token: every token still reaches the client, charged once', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'early [[tokens=3]] [[sse=usage-early]]';
    const { error, text, chunks } = await streamed(apiKey, content);
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    expect(chunks.every((c) => c.usage == null)).toBe(true);
    await expectCharged(userId, content, 3);
  });

  test('usage reported as it goes (twice, cumulative): the largest, the last, counts, and the client sees both when it asked', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'twice [[tokens=3]] [[sse=usage-twice]]';
    const { error, text, chunks } = await streamed(apiKey, content, { includeUsage: true });
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    expect(chunks.filter((c) => c.usage != null).map((c) => c.usage?.completion_tokens)).toEqual([
      1, 3,
    ]);
    await expectCharged(userId, content, 3);
  });

  for (const includeUsage of [false, true]) {
    test(`usage split in two reports (the prompt's first, the completion's last without prompt_tokens), include_usage ${includeUsage}: charged prompt + completion exactly`, async () => {
      const { userId, apiKey } = await newUser();
      const content = `split ${includeUsage} [[tokens=3]] [[sse=usage-split]]`;
      const { error, text, chunks } = await streamed(apiKey, content, { includeUsage });
      expect(error).toBeNull();
      expect(text).toBe(completionText(3));
      const prompt = countPromptTokens({ messages: ask(content) });
      // Passed on as upstream sent them when asked for, else hidden.
      const reports = chunks
        .filter((c) => c.usage != null)
        .map((c) => [c.usage?.prompt_tokens, c.usage?.completion_tokens]);
      expect(reports).toEqual(
        includeUsage
          ? [
              [prompt, 0],
              [undefined, 3],
            ]
          : [],
      );
      await expectCharged(userId, content, 3);
    });
  }

  test('[DONE] twice: one [DONE] to the client, charged once', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'done twice [[tokens=3]] [[sse=done-twice]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    await expectCharged(userId, content, 3);
  });

  test('[DONE] with whitespace after it (`data: [DONE] `), as the SDK accepts it: the stream ends ok, charged its usage', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'done spaced [[tokens=3]] [[sse=done-spaced]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    await expectCharged(userId, content, 3);
  });

  test('no [DONE] (the stream just ends): every token delivered, then the error event; charged its usage', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'no done [[tokens=3]] [[sse=no-done]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_error');
    expect(text).toBe(completionText(3));
    await expectCharged(userId, content, 3, 'upstream_error');
  });

  test('content and usage after [DONE] (in the same read): not passed on, not charged', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'after done [[tokens=3]] [[sse=after-done]]';
    const { error, text, chunks } = await streamed(apiKey, content, { includeUsage: true });
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    expect(chunks.filter((c) => c.usage != null).map((c) => c.usage?.completion_tokens)).toEqual([
      3,
    ]);
    await expectCharged(userId, content, 3);
  });

  test('an error object mid-stream: the SDK throws upstream error, charged an estimate of what was generated', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'error event [[tokens=3]] [[sse=error-event]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as Error).message).toContain(
      'The server had an error while processing your request.',
    );
    expect(text).toBe('tok0 tok1 ');
    // About four bytes a token: the prompt's text, and the 10 bytes generated.
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion: 3 });
    expect(await state(userId)).toEqual({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          outcome: 'upstream_error',
          cost: cost.toString(),
          estimated: true,
          prompt: String(prompt),
          completion: '3',
        },
      ],
    });
  });

  test('n=2 with choices interleaved, through the stream helper: both answers whole, charged the usage', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'two [[tokens=3]] [[sse=two-choices]]';
    const stream = sdk(service.url, apiKey).chat.completions.stream({
      model: 'gpt-4o-mini',
      messages: ask(content),
      n: 2,
      stream_options: { include_usage: true },
    });
    const completion = await stream.finalChatCompletion();
    expect(completion.choices.map((c) => c.message.content)).toEqual([
      completionText(3),
      'alt0 alt1 alt2 ',
    ]);
    expect(completion.usage?.completion_tokens).toBe(3);
    await expectCharged(userId, content, 3);
  });
});

describe('usage shapes in streams', () => {
  test('counts as strings of digits: read exactly, not estimated', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'strings [[tokens=3]] [[sse=usage-strings]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    await expectCharged(userId, content, 3);
  });

  test('a negative count: usage unreadable, charged an estimate marked estimated', async () => {
    const { userId, apiKey } = await newUser();
    const content = 'negative [[tokens=3]] [[sse=usage-negative]]';
    const { error, text } = await streamed(apiKey, content);
    expect(error).toBeNull();
    expect(text).toBe(completionText(3));
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const completion = Math.ceil(Buffer.byteLength(completionText(3)) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion });
    expect(await state(userId)).toEqual({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          outcome: 'ok',
          cost: cost.toString(),
          estimated: true,
          prompt: String(prompt),
          completion: String(completion),
        },
      ],
    });
  });
});

describe('gateway.maxStreamEventChars', () => {
  // Small, so the test streams little; the call's time limit stays far above what it takes.
  let limited: GatewayStack;
  useGatewayStack(
    (ready) => (limited = ready),
    (config) => ({
      ...config,
      gateway: { maxStreamEventChars: 65_536, maxCallDurationMs: 30_000 },
    }),
  );

  test('an event that never ends is cut as malformed: what was generated is charged, no hold left', async () => {
    const { userId, apiKey } = await userWithKey(limited.service, {
      telegramId: 7901,
      balance: '1',
    });
    const content = 'endless [[tokens=3]] [[sse=endless-event]]';
    const chunks: ChatCompletionChunk[] = [];
    let error: unknown = null;
    try {
      const stream = await sdk(limited.service.url, apiKey).chat.completions.create({
        model: 'gpt-4o-mini',
        messages: ask(content),
        stream: true,
      });
      for await (const chunk of stream) chunks.push(chunk);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_malformed');
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('tok0 ');

    await limited.stub.waitForIdle();
    await limited.service.http.services.work.drain(5000);
    // No usage came: about four bytes a token, of the prompt's text and of "tok0 ".
    const prompt = Math.ceil(Buffer.byteLength(content) / 4);
    const cost = expectedCost(MODELS.mini, { prompt, completion: 2 });
    const { rows } = await limited.database.pool.query(
      `select outcome, cost_usd::text as cost, estimated from usage_records where user_id = $1`,
      [userId],
    );
    expect(rows).toEqual([
      { outcome: 'upstream_malformed', cost: cost.toString(), estimated: true },
    ]);
    const { body } = await admin<{ available: string; held: string }>(
      limited.service,
      'GET',
      `/users/${userId}/balance`,
    );
    expect(body).toMatchObject({ available: new Decimal(1).sub(cost).toString(), held: '0' });
  });
});

describe('gateway.maxStreamEventChars is exact, however the event is split into reads', () => {
  // What counts is the event's line, `data: ` included, line breaks not (sseBound.ts). Above
  // the stream's other events (the usage chunk, which the gateway always asks for, is 434).
  const LIMIT = 600;
  const contentFor = (chars: number, split: number) =>
    `pad [[tokens=2]] [[event-chars=${chars}]] [[event-split=${split}]]`;
  let bounded: GatewayStack;
  useGatewayStack(
    (ready) => (bounded = ready),
    // Calls go 8 at a time: a provider timeout well above what a loaded machine may take.
    (config) => ({
      ...config,
      providers: config.providers!.map((provider) => ({ ...provider, timeoutMs: 10_000 })),
      gateway: { maxStreamEventChars: LIMIT, maxCallDurationMs: 30_000 },
    }),
  );

  test.each([
    [LIMIT - 1, 'passes'],
    [LIMIT, 'passes'],
    [LIMIT + 1, 'is cut'],
  ])(
    'an event of %i characters %s, whole or split at many bytes',
    async (chars, fate) => {
      const { userId, apiKey } = await userWithKey(bounded.service, {
        telegramId: 7950 + chars - LIMIT,
        balance: '10',
      });
      const client = sdk(bounded.service.url, apiKey);
      // The event is its line and "\n\n"; a split at 0 sends it in one write. Every cut in its
      // first and last 24 bytes (the `data: ` prefix; the line's end, its two line breaks),
      // and every 13th in between.
      const splits = Array.from({ length: chars + 2 }, (_, split) => split).filter(
        (split) => split < 24 || split >= chars + 2 - 24 || split % 13 === 0,
      );
      const seen: { split: number; requestId: string; code: unknown; text: string }[] = [];
      const call = async (split: number) => {
        const { data, response } = await client.chat.completions
          .create({ model: 'gpt-4o-mini', messages: ask(contentFor(chars, split)), stream: true })
          .withResponse();
        let text = '';
        let code: unknown = null;
        try {
          for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? '';
        } catch (error) {
          code = (error as InstanceType<typeof OpenAI.APIError>).code ?? String(error);
        }
        seen.push({ split, requestId: response.headers.get('x-request-id')!, code, text });
      };
      for (let at = 0; at < splits.length; at += 8)
        await Promise.all(splits.slice(at, at + 8).map(call));

      await bounded.stub.waitForIdle();
      await bounded.service.http.services.work.drain(5000);
      const { rows } = await bounded.database.pool.query<{
        request_id: string;
        outcome: string;
        cost: string;
      }>(
        `select request_id, outcome, cost_usd::text as cost from usage_records where user_id = $1`,
        [userId],
      );
      const byRequest = new Map(rows.map((row) => [row.request_id, row]));
      const outcomes = seen
        .sort((a, b) => a.split - b.split)
        .map(({ split, requestId, code, text }) => {
          const prompt = countPromptTokens({ messages: ask(contentFor(chars, split)) });
          const usageCost = expectedCost(MODELS.mini, { prompt, completion: 2 }).toString();
          const row = byRequest.get(requestId);
          return {
            split,
            code,
            // The padding's length depends on the rest of the event (its id's digits).
            text: text.replace(/x+/, 'x…'),
            outcome: row?.outcome,
            cost: row?.cost === usageCost ? 'its usage' : row?.cost,
          };
        });
      expect(outcomes).toEqual(
        splits.map((split) =>
          fate === 'passes'
            ? { split, code: null, text: 'tok0 x…tok1 ', outcome: 'ok', cost: 'its usage' }
            : // Cut in the first token's event: nothing generated reached the client, nothing is charged.
              {
                split,
                code: 'upstream_malformed',
                text: '',
                outcome: 'upstream_malformed',
                cost: '0',
              },
        ),
      );
      const { body } = await admin<{ held: string }>(
        bounded.service,
        'GET',
        `/users/${userId}/balance`,
      );
      expect(body.held).toBe('0');
    },
    120_000,
  );
});
