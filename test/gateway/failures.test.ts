import { request, type IncomingMessage } from 'node:http';
import OpenAI from 'openai';
import { describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { retryAfterSeconds } from '../../src/gateway/upstream.js';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { completionText, countPromptTokens, type UpstreamStub } from '../support/upstream-stub.js';
import {
  callState,
  expectedCost,
  useGatewayStack,
  MODELS,
  sdk,
  type GatewayStack,
} from './fixtures.js';

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;

useGatewayStack((stack) => ({ database, stub, service } = stack));

const state = (userId: string, on: GatewayStack = { database, stub, service }) =>
  callState(
    on,
    userId,
    `outcome, http_status, cost_usd::text as cost, estimated, completion_tokens::text as completion`,
  );

const ask = (content: string) => [{ role: 'user' as const, content }];

/** A streamed chat call over plain HTTP, so the test controls how fast it is read. */
async function openStream(on: GatewayStack, apiKey: string, content: string) {
  const req = request(`${on.service.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
  });
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', resolve);
    req.end(JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: ask(content) }));
  });
  return { req, res };
}

/**
 * A streamed call (the official SDK) whose client gives up once the call was forwarded, before
 * upstream's headers: returns the index of its request in the stub's log.
 */
async function leaveBeforeHeaders(on: GatewayStack, apiKey: string, content: string) {
  const controller = new AbortController();
  const forwarded = on.stub.requests.length;
  const call = sdk(on.service.url, apiKey)
    .chat.completions.create(
      { model: 'gpt-4o-mini', messages: ask(content), stream: true },
      { signal: controller.signal },
    )
    .catch((e: unknown) => e);
  // Forwarded (the stub has the request), and no headers from upstream yet.
  while (on.stub.requests.length === forwarded) await new Promise((r) => setTimeout(r, 10));
  controller.abort();
  expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
  return forwarded;
}

/** Waits for the user's usage row: the call has ended and is settled or released. */
async function untilRecorded(on: GatewayStack, userId: string, giveUpAfterMs = 30_000) {
  const recorded = async () =>
    (await on.database.pool.query('select 1 from usage_records where user_id = $1', [userId])).rows
      .length > 0;
  for (const giveUpAt = Date.now() + giveUpAfterMs; !(await recorded());) {
    if (Date.now() > giveUpAt) throw new Error('no usage row: the call has not ended');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The user's 1 USD less the answer upstream generated for `messages` (`completion` tokens), on a 499 row. */
async function expectChargedForAbandoned(
  userId: string,
  messages: Parameters<typeof countPromptTokens>[0]['messages'],
  completion: number,
) {
  const cost = expectedCost(MODELS.mini, { prompt: countPromptTokens({ messages }), completion });
  expect(await state(userId)).toMatchObject({
    available: new Decimal(1).sub(cost).toString(),
    held: '0',
    pendingHolds: 0,
    rows: [
      {
        outcome: 'client_disconnected',
        http_status: 499,
        cost: cost.toString(),
        estimated: false,
        completion: String(completion),
      },
    ],
  });
}

/** The user's 1 USD untouched: nothing charged, nothing held, one usage row saying why. */
async function expectUncharged(userId: string, outcome: string, httpStatus: number) {
  expect(await state(userId)).toMatchObject({
    available: '1',
    held: '0',
    pendingHolds: 0,
    rows: [{ outcome, http_status: httpStatus, cost: '0', estimated: false, completion: '0' }],
  });
}

test('upstream 500: a 502 in OpenAI shape, nothing charged, nothing held, the row says why', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2001, balance: '1' });
  const error = await sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages: ask('boom [[fail=500]]') })
    .catch((e: unknown) => e);
  expect(error).toBeInstanceOf(OpenAI.APIError);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
  expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_error');
  await expectUncharged(userId, 'upstream_error', 502);
});

test('upstream 500 whose error body never comes: a 502 at the provider timeout, nothing charged, nothing held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2008, balance: '1' });
  const started = Date.now();
  const error = await sdk(service.url, apiKey)
    .chat.completions.create({
      model: 'gpt-4o-mini',
      messages: ask('boom [[fail=500]] [[stall-after=0]]'),
    })
    .catch((e: unknown) => e);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
  expect((error as InstanceType<typeof OpenAI.APIError>).message).toMatch(
    /stub answered 500; nothing was charged/,
  );
  // The provider timeout is 1.5 s; the SDK would give up at 10 s (about 2 s on a loaded machine).
  expect(Date.now() - started).toBeLessThan(8000);
  await expectUncharged(userId, 'upstream_error', 502);
});

test("upstream 400 (the caller's bad parameter): a 400 the SDK does not retry, with upstream's message and param, nothing charged", async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2009, balance: '1' });
  // The stub rejects a bad directive as OpenAI rejects a bad field: 400, param 'messages'.
  const content = 'bad param [[tokens=lots]]';
  const retrying = new OpenAI({
    baseURL: `${service.url}/v1`,
    apiKey,
    maxRetries: 2,
    logLevel: 'off',
  });
  const error = await retrying.chat.completions
    .create({ model: 'gpt-4o-mini', messages: ask(content) })
    .catch((e: unknown) => e);
  expect(error).toBeInstanceOf(OpenAI.BadRequestError);
  expect((error as InstanceType<typeof OpenAI.APIError>).error).toEqual({
    message:
      'stub answered 400: Stub directive [[tokens=lots]] needs an integer from 0 to 100000.; nothing was charged',
    type: 'invalid_request_error',
    code: 'upstream_rejected_request',
    param: 'messages',
  });
  expect(stub.requests.filter((r) => JSON.stringify(r.body).includes(content))).toHaveLength(1);
  await expectUncharged(userId, 'upstream_error', 400);
});

test.each([
  [404, 400, 'upstream_rejected_request'],
  [422, 400, 'upstream_rejected_request'],
  [401, 502, 'upstream_error'],
  [403, 502, 'upstream_error'],
  [429, 502, 'upstream_error'],
])('upstream %i: the client gets %i %s, nothing charged', async (upstreamStatus, status, code) => {
  const { userId, apiKey } = await userWithKey(service, {
    telegramId: 2100 + upstreamStatus,
    balance: '1',
  });
  const error = await sdk(service.url, apiKey)
    .chat.completions.create({
      model: 'gpt-4o-mini',
      messages: ask(`no [[fail=${upstreamStatus}]]`),
    })
    .catch((e: unknown) => e);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(status);
  expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe(code);
  await expectUncharged(userId, 'upstream_error', status);
});

test.each([429, 503])(
  'upstream %i saying when to come back: the 502 carries its retry-after, so SDKs wait that long; nothing charged',
  async (upstreamStatus) => {
    const { userId, apiKey } = await userWithKey(service, {
      telegramId: 2200 + upstreamStatus,
      balance: '1',
    });
    const response = await fetch(`${service.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'gpt-4o-mini',
        messages: ask(`later [[fail=${upstreamStatus}]] [[retry-after=7]]`),
      }),
    });
    expect(response.status).toBe(502);
    expect(response.headers.get('retry-after')).toBe('7');
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe(
      'upstream_error',
    );
    await expectUncharged(userId, 'upstream_error', 502);
  },
);

test("upstream's retry-after read as seconds from now: delay-seconds or an HTTP-date, at most a day", () => {
  const now = Date.parse('2026-11-27T12:00:00Z');
  expect(retryAfterSeconds('7', now)).toBe(7);
  expect(retryAfterSeconds(' 0 ', now)).toBe(0);
  expect(retryAfterSeconds('Fri, 27 Nov 2026 12:00:30 GMT', now)).toBe(30);
  expect(retryAfterSeconds('Fri, 27 Nov 2026 11:59:00 GMT', now)).toBe(0); // already past
  expect(retryAfterSeconds('999999999999', now)).toBe(86_400);
  expect(retryAfterSeconds('soon', now)).toBeNull();
  expect(retryAfterSeconds('-5', now)).toBeNull();
  expect(retryAfterSeconds(undefined, now)).toBeNull();
});

test('an upstream failure without retry-after: none on the 502 either', async () => {
  const { apiKey } = await userWithKey(service, { telegramId: 2014, balance: '1' });
  const response = await fetch(`${service.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: ask('no [[fail=503]]') }),
  });
  expect(response.status).toBe(502);
  expect(response.headers.get('retry-after')).toBeNull();
});

test('upstream timeout: a 504, nothing charged, nothing held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2002, balance: '1' });
  const error = await sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages: ask('wait [[stall]]') })
    .catch((e: unknown) => e);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(504);
  await expectUncharged(userId, 'upstream_timeout', 504);
});

test('malformed upstream JSON: a 502, nothing charged, nothing held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2003, balance: '1' });
  const error = await sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages: ask('garble [[malformed]]') })
    .catch((e: unknown) => e);
  expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
  expect(await state(userId)).toMatchObject({
    available: '1',
    pendingHolds: 0,
    rows: [{ outcome: 'upstream_malformed', cost: '0' }],
  });
});

test('a client that disconnects mid-stream: upstream is aborted, what was generated is charged (estimated), nothing stays held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2004, balance: '1' });
  const controller = new AbortController();
  const stream = await sdk(service.url, apiKey).chat.completions.create(
    { model: 'gpt-4o-mini', messages: ask('long story [[tokens=200]] [[delay=20]]'), stream: true },
    { signal: controller.signal },
  );
  let received = '';
  let chunks = 0;
  for await (const chunk of stream) {
    received += chunk.choices[0]?.delta?.content ?? '';
    chunks += 1;
    if (chunks === 6) controller.abort();
  }
  const after = await state(userId);
  const upstream = stub.requests.find((r) => JSON.stringify(r.body).includes('long story'))!;
  expect(upstream.clientDisconnected).toBe(true);
  expect(upstream.chunksSent).toBeLessThan(100);
  expect(after.pendingHolds).toBe(0);
  expect(after.held).toBe('0');
  expect(after.rows).toHaveLength(1);
  const row = after.rows[0]!;
  expect(row).toMatchObject({ outcome: 'client_disconnected', estimated: true, http_status: 200 });
  // Charged for the text that was generated before the disconnect: at least what the client saw.
  expect(Number(row.completion)).toBeGreaterThanOrEqual(Math.ceil(Buffer.byteLength(received) / 4));
  expect(new Decimal(row.cost).gt(0)).toBe(true);
  expect(after.available).toBe(new Decimal(1).sub(row.cost).toString());
});

test('a client that leaves a non-streamed call after it was forwarded is charged for the answer upstream generated (499 on the row), nothing stays held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2013, balance: '1' });
  const messages = ask('a long answer [[tokens=40]] [[delay=400]]');
  const controller = new AbortController();
  const forwarded = stub.requests.length;
  const call = sdk(service.url, apiKey)
    .chat.completions.create({ model: 'gpt-4o-mini', messages }, { signal: controller.signal })
    .catch((e: unknown) => e);
  // Forwarded (the stub has the request): upstream is generating the answer.
  while (stub.requests.length === forwarded) await new Promise((r) => setTimeout(r, 10));
  controller.abort();
  expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
  // The gateway goes on reading upstream's answer after the client left: until its row is in.
  await untilRecorded({ database, stub, service }, userId);
  await expectChargedForAbandoned(userId, messages, 40);
});

test('a client that leaves a stream that upstream answers as one JSON completion is charged for that answer (499 on the row), nothing stays held', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2016, balance: '1' });
  // The provider ignores `stream` and generates the whole answer, then sends it as JSON.
  const messages = ask('a long answer [[json-stream]] [[tokens=40]] [[delay=400]]');
  const controller = new AbortController();
  const forwarded = stub.requests.length;
  const call = (async () => {
    const stream = await sdk(service.url, apiKey).chat.completions.create(
      { model: 'gpt-4o-mini', messages, stream: true },
      { signal: controller.signal },
    );
    for await (const _chunk of stream) void _chunk;
  })().catch((e: unknown) => e);
  // Forwarded (the stub has the request): upstream is generating the answer.
  while (stub.requests.length === forwarded) await new Promise((r) => setTimeout(r, 10));
  controller.abort();
  expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
  await untilRecorded({ database, stub, service }, userId);
  await expectChargedForAbandoned(userId, messages, 40);
  // The answer was read to its end, not cut.
  expect(stub.requests[forwarded]!.clientDisconnected).toBe(false);
});

test('a client that leaves a stream before upstream answers, upstream then timing out: recorded as the client leaving (499), not as the timeout; nothing charged', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2017, balance: '1' });
  // The provider timeout (1.5 s here) ends the wait before the grace for a departed client.
  const forwarded = await leaveBeforeHeaders(
    { database, stub, service },
    apiKey,
    'no answer [[stall]]',
  );
  await untilRecorded({ database, stub, service }, userId);
  await expectUncharged(userId, 'client_disconnected', 499);
  expect(stub.requests[forwarded]!.clientDisconnected).toBe(true);
});

test('a client that leaves a stream before its first chunk: nothing charged, nothing held, no tokens on the row', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2011, balance: '1' });
  const controller = new AbortController();
  // Headers at once, the first chunk after 1.2 s (just inside the 1.5 s idle limit): the
  // client is gone by then.
  const stream = await sdk(service.url, apiKey).chat.completions.create(
    { model: 'gpt-4o-mini', messages: ask('never mind [[tokens=5]] [[delay=1200]]'), stream: true },
    { signal: controller.signal },
  );
  controller.abort();
  await (async () => {
    for await (const _chunk of stream) void _chunk;
  })().catch(() => {});
  await expectUncharged(userId, 'client_disconnected', 200);
  const { rows } = await database.pool.query(
    'select prompt_tokens::text as prompt from usage_records where user_id = $1',
    [userId],
  );
  expect(rows).toEqual([{ prompt: '0' }]);
});

test('an upstream that fails mid-stream: the client gets an error event, is charged for what was generated', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2005, balance: '1' });
  const stream = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: ask('partial [[tokens=50]] [[stall-after=4]]'),
    stream: true,
  });
  let received = '';
  const error = await (async () => {
    for await (const chunk of stream) received += chunk.choices[0]?.delta?.content ?? '';
  })().catch((e: unknown) => e);
  expect(String(error)).toMatch(/upstream stopped sending/);
  expect(received).toBe('tok0 tok1 tok2 ');
  const after = await state(userId);
  expect(after.pendingHolds).toBe(0);
  expect(after.rows).toMatchObject([{ outcome: 'upstream_timeout', estimated: true }]);
  expect(after.available).toBe(new Decimal(1).sub(after.rows[0].cost).toString());
});

test('a stream event that is JSON but no chunk (data: null): everything before it reaches the client, then an upstream_malformed error; charged for what was generated', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2010, balance: '1' });
  const content = 'odd [[tokens=5]] [[null-event]]';
  const stream = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages: ask(content),
    stream: true,
  });
  let received = '';
  const error = await (async () => {
    for await (const chunk of stream) received += chunk.choices[0]?.delta?.content ?? '';
  })().catch((e: unknown) => e);
  expect(error).toBeInstanceOf(OpenAI.APIError);
  expect((error as InstanceType<typeof OpenAI.APIError>).code).toBe('upstream_malformed');
  expect(received).toBe(completionText(5));
  const cost = expectedCost(MODELS.mini, {
    prompt: Math.ceil(Buffer.byteLength(content) / 4),
    completion: Math.ceil(Buffer.byteLength(received) / 4),
  });
  expect(await state(userId)).toEqual({
    available: new Decimal(1).sub(cost).toString(),
    held: '0',
    pendingHolds: 0,
    rows: [
      {
        outcome: 'upstream_malformed',
        http_status: 200,
        cost: cost.toString(),
        estimated: true,
        completion: String(Math.ceil(Buffer.byteLength(received) / 4)),
      },
    ],
  });
});

test('an upstream stream without usage is settled on an estimate and marked so', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2006, balance: '1' });
  const messages = ask('quiet [[tokens=8]] [[no-usage]]');
  const stream = await sdk(service.url, apiKey).chat.completions.create({
    model: 'gpt-4o-mini',
    messages,
    stream: true,
  });
  for await (const _chunk of stream) void _chunk;
  const after = await state(userId);
  const text = Array.from({ length: 8 }, (_, i) => `tok${i} `).join('');
  const estimatedPrompt = Math.ceil(Buffer.byteLength('quiet [[tokens=8]] [[no-usage]]') / 4);
  const cost = expectedCost(MODELS.mini, {
    prompt: estimatedPrompt,
    completion: Math.ceil(Buffer.byteLength(text) / 4),
  });
  expect(after.rows).toEqual([
    {
      outcome: 'ok',
      http_status: 200,
      cost: cost.toString(),
      estimated: true,
      completion: String(Math.ceil(text.length / 4)),
    },
  ]);
  expect(countPromptTokens({ messages })).toBeGreaterThan(0);
});

test('a client that hangs up after a streamed tool call, before the usage chunk, is charged for the call (estimated)', async () => {
  const { userId, apiKey } = await userWithKey(service, { telegramId: 2007, balance: '1' });
  // 52 events: the role chunk, 50 pieces of arguments, the finish; then upstream goes quiet.
  const content = 'call f [[tool-call]] [[tokens=50]] [[stall-after=52]]';
  const controller = new AbortController();
  const stream = await sdk(service.url, apiKey).chat.completions.create(
    { model: 'gpt-4o-mini', messages: ask(content), stream: true },
    { signal: controller.signal },
  );
  let args = '';
  for await (const chunk of stream) {
    args += chunk.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? '';
    if (chunk.choices[0]?.finish_reason === 'tool_calls') controller.abort();
  }
  expect(args).toBe(completionText(50));
  const cost = expectedCost(MODELS.mini, {
    prompt: Math.ceil(Buffer.byteLength(content) / 4),
    completion: Math.ceil(Buffer.byteLength(`f${args}`) / 4),
  });
  expect(await state(userId)).toEqual({
    available: new Decimal(1).sub(cost).toString(),
    held: '0',
    pendingHolds: 0,
    rows: [
      {
        outcome: 'client_disconnected',
        http_status: 200,
        cost: cost.toString(),
        estimated: true,
        completion: String(Math.ceil(Buffer.byteLength(`f${args}`) / 4)),
      },
    ],
  });
});

describe('a streaming client that stops reading', () => {
  let slow: GatewayStack;
  // Upstream may be idle 1.5 s; a call may last 10 s, so its hold lives 12.5 s.
  useGatewayStack(
    (stack) => (slow = stack),
    (config) => ({
      ...config,
      models: config.models!.map((model) =>
        model.kind === 'embedding'
          ? model
          : { ...model, maxOutputTokensDefault: 100_000, maxOutputTokensLimit: 100_000 },
      ),
      gateway: { maxCallDurationMs: 10_000, holdGraceMs: 1000 },
    }),
  );

  test('is cut off after the idle limit, and charged for what was generated', async () => {
    const { userId, apiKey } = await userWithKey(slow.service, { telegramId: 2101, balance: '1' });
    const content = 'a long answer [[tokens=100000]]';
    // Reads the headers, then nothing: far more is generated than the buffers between hold.
    const { req, res } = await openStream(slow, apiKey, content);
    try {
      res.pause();
      expect(res.statusCode).toBe(200);
      const after = await state(userId, slow);
      expect(after.rows).toHaveLength(1);
      const row = after.rows[0]!;
      expect(row).toMatchObject({
        outcome: 'client_disconnected',
        http_status: 200,
        estimated: true,
      });
      const cost = expectedCost(MODELS.mini, {
        prompt: Math.ceil(Buffer.byteLength(content) / 4),
        completion: Number(row.completion),
      });
      expect(Number(row.completion)).toBeGreaterThan(0);
      expect(row.cost).toBe(cost.toString());
      expect(after).toMatchObject({
        available: new Decimal(1).sub(cost).toString(),
        held: '0',
        pendingHolds: 0,
      });
      const { rows: timing } = await slow.database.pool.query(
        'select latency_ms from usage_records where user_id = $1',
        [userId],
      );
      // Cut for not reading, before the 10 s call limit (and so before its hold expires).
      expect(timing[0].latency_ms).toBeLessThan(10_000);
    } finally {
      req.destroy();
    }
  });

  test('that reads slowly but steadily gets the whole answer, charged exactly, without a listener leak', async () => {
    const { userId, apiKey } = await userWithKey(slow.service, { telegramId: 2102, balance: '1' });
    const content = 'a slow read [[tokens=40000]]';
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on('warning', onWarning);
    try {
      const { res } = await openStream(slow, apiKey, content);
      // A short pause after every 64 KiB (each far below the 1.5 s idle limit), so the
      // gateway often waits for it to drain.
      const received = await new Promise<string>((resolve, reject) => {
        let text = '';
        let unpaused = 0;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          unpaused += chunk.length;
          if (unpaused < 65_536) return;
          unpaused = 0;
          res.pause();
          setTimeout(() => res.resume(), 5);
        });
        res.once('end', () => resolve(text));
        res.once('error', reject);
      });
      expect(received.endsWith('data: [DONE]\n\n')).toBe(true);
      expect(received).toContain('"content":"tok39999 "');
      const after = await state(userId, slow);
      const cost = expectedCost(MODELS.mini, {
        prompt: countPromptTokens({ messages: ask(content) }),
        completion: 40_000,
      });
      expect(after).toEqual({
        available: new Decimal(1).sub(cost).toString(),
        held: '0',
        pendingHolds: 0,
        rows: [
          {
            outcome: 'ok',
            http_status: 200,
            cost: cost.toString(),
            estimated: false,
            completion: '40000',
          },
        ],
      });
      expect(warnings).not.toContain('MaxListenersExceededWarning');
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('a stream cut by the call deadline', () => {
  let short: GatewayStack;
  // Upstream (and a client that does not read) may be idle 10 s, but a call may last only 2 s:
  // the deadline, not the idle limit, ends these calls. A hold lives 10 + 2 + 1 s.
  useGatewayStack(
    (stack) => (short = stack),
    (config) => ({
      ...config,
      providers: config.providers!.map((provider) => ({ ...provider, timeoutMs: 10_000 })),
      models: config.models!.map((model) =>
        model.kind === 'embedding'
          ? model
          : { ...model, maxOutputTokensDefault: 100_000, maxOutputTokensLimit: 100_000 },
      ),
      gateway: { maxCallDurationMs: 2000, holdGraceMs: 1000 },
    }),
  );

  async function latencyMs(userId: string): Promise<number> {
    const { rows } = await short.database.pool.query(
      'select latency_ms from usage_records where user_id = $1',
      [userId],
    );
    return rows[0].latency_ms as number;
  }

  test('while waiting for a client that stopped reading: recorded as the deadline, not a disconnect; charged for what was generated', async () => {
    const { userId, apiKey } = await userWithKey(short.service, { telegramId: 2201, balance: '1' });
    const content = 'a long answer, unread [[tokens=100000]]';
    const { req, res } = await openStream(short, apiKey, content);
    try {
      res.pause();
      expect(res.statusCode).toBe(200);
      const after = await state(userId, short);
      expect(after.rows).toHaveLength(1);
      const row = after.rows[0]!;
      expect(row).toMatchObject({
        outcome: 'deadline_exceeded',
        http_status: 200,
        estimated: true,
      });
      expect(Number(row.completion)).toBeGreaterThan(0);
      const cost = expectedCost(MODELS.mini, {
        prompt: Math.ceil(Buffer.byteLength(content) / 4),
        completion: Number(row.completion),
      });
      expect(row.cost).toBe(cost.toString());
      expect(after).toMatchObject({
        available: new Decimal(1).sub(cost).toString(),
        held: '0',
        pendingHolds: 0,
      });
      // Cut at the 2 s deadline, well before the 10 s idle limit.
      expect(await latencyMs(userId)).toBeGreaterThanOrEqual(2000);
      expect(await latencyMs(userId)).toBeLessThan(9000);
    } finally {
      req.destroy();
    }
  });

  test('while waiting for a slow upstream: the client gets an error event naming the time limit; recorded as the deadline; charged for what was generated', async () => {
    const { userId, apiKey } = await userWithKey(short.service, { telegramId: 2202, balance: '1' });
    // A token every 100 ms (far inside the idle limit): about 20 of the 1000 by the deadline.
    const content = 'a slow answer [[tokens=1000]] [[delay=100]]';
    const stream = await sdk(short.service.url, apiKey).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: ask(content),
      stream: true,
    });
    let received = '';
    const error = await (async () => {
      for await (const chunk of stream) received += chunk.choices[0]?.delta?.content ?? '';
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(String(error)).toMatch(/time limit of 2000 ms; charged only for what was generated/);
    expect(received.length).toBeGreaterThan(0);
    expect(received.length).toBeLessThan(completionText(1000).length);
    const cost = expectedCost(MODELS.mini, {
      prompt: Math.ceil(Buffer.byteLength(content) / 4),
      completion: Math.ceil(Buffer.byteLength(received) / 4),
    });
    expect(await state(userId, short)).toEqual({
      available: new Decimal(1).sub(cost).toString(),
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          outcome: 'deadline_exceeded',
          http_status: 200,
          cost: cost.toString(),
          estimated: true,
          completion: String(Math.ceil(Buffer.byteLength(received) / 4)),
        },
      ],
    });
    expect(await latencyMs(userId)).toBeLessThan(9000);
  });

  // The client gives up after 5 s: before the deadline was applied to the wait for upstream,
  // it was the one to cut these calls (recorded client_disconnected), or the 10 s provider
  // timeout was; now the 2 s deadline does.
  test('while waiting for a stream to start: a 504 deadline_exceeded at the time limit, recorded as the deadline; nothing charged', async () => {
    const { userId, apiKey } = await userWithKey(short.service, { telegramId: 2203, balance: '1' });
    const error = await sdk(short.service.url, apiKey, { timeout: 5000 })
      .chat.completions.create({
        model: 'gpt-4o-mini',
        messages: ask('no answer [[stall]]'),
        stream: true,
      })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 504, code: 'deadline_exceeded' });
    expect(String(error)).toMatch(
      /time limit of 2000 ms while waiting for upstream; nothing was charged/,
    );
    expect(await state(userId, short)).toEqual({
      available: '1',
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          outcome: 'deadline_exceeded',
          http_status: 504,
          cost: '0',
          estimated: false,
          completion: '0',
        },
      ],
    });
    expect(await latencyMs(userId)).toBeGreaterThanOrEqual(2000);
    expect(await latencyMs(userId)).toBeLessThan(4500);
  });

  test('while waiting for a non-streamed answer: the same, the call is not left running past its limit', async () => {
    const { userId, apiKey } = await userWithKey(short.service, { telegramId: 2204, balance: '1' });
    const error = await sdk(short.service.url, apiKey, { timeout: 5000 })
      .chat.completions.create({ model: 'gpt-4o-mini', messages: ask('slow [[delay=8000]]') })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ status: 504, code: 'deadline_exceeded' });
    expect(await state(userId, short)).toMatchObject({
      available: '1',
      held: '0',
      pendingHolds: 0,
      rows: [{ outcome: 'deadline_exceeded', http_status: 504, cost: '0' }],
    });
    expect(await latencyMs(userId)).toBeGreaterThanOrEqual(2000);
    expect(await latencyMs(userId)).toBeLessThan(4500);
  });
});

describe('a stream whose client leaves before upstream answers', () => {
  let patient: GatewayStack;
  // A provider given a minute to answer, a call ten: only the grace for a client that left
  // (300 ms here) can end a wait for a stalled provider within this test's time.
  useGatewayStack(
    (stack) => (patient = stack),
    (config) => ({
      ...config,
      providers: config.providers!.map((provider) => ({ ...provider, timeoutMs: 60_000 })),
      gateway: { maxCallDurationMs: 600_000, clientGoneGraceMs: 300 },
    }),
  );

  test('upstream is aborted after the grace, not held open until its timeout; recorded as the client leaving (499), nothing charged, nothing held', async () => {
    const { userId, apiKey } = await userWithKey(patient.service, {
      telegramId: 2205,
      balance: '1',
    });
    const forwarded = await leaveBeforeHeaders(patient, apiKey, 'no answer [[stall]]');
    await untilRecorded(patient, userId);
    expect(await state(userId, patient)).toEqual({
      available: '1',
      held: '0',
      pendingHolds: 0,
      rows: [
        {
          outcome: 'client_disconnected',
          http_status: 499,
          cost: '0',
          estimated: false,
          completion: '0',
        },
      ],
    });
    // The stub saw the gateway hang up: the request was aborted, not left to time out.
    expect(patient.stub.requests[forwarded]!.clientDisconnected).toBe(true);
  });
});
