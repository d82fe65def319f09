import OpenAI, {
  APIConnectionTimeoutError,
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  RateLimitError,
} from 'openai';
import type {
  ChatCompletionChunk,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
} from 'openai/resources/chat/completions';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  completionText,
  countEmbeddingTokens,
  countPromptTokens,
  embedText,
  MODEL_IDS,
  startUpstreamStub,
  type UpstreamRequest,
  type UpstreamStub,
} from './support/upstream-stub.js';

const API_KEY = 'sk-stub-test';
let stub: UpstreamStub;
let client: OpenAI;

beforeAll(async () => {
  stub = await startUpstreamStub({ apiKey: API_KEY });
  client = new OpenAI({ baseURL: stub.url, apiKey: API_KEY, maxRetries: 0 });
});
afterAll(async () => {
  await stub.close();
});
beforeEach(() => {
  stub.reset();
});

function ask(
  content: string,
  extra: Partial<ChatCompletionCreateParamsNonStreaming> = {},
): ChatCompletionCreateParamsNonStreaming {
  return {
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content },
    ],
    ...extra,
  };
}

function askStream(
  content: string,
  extra: Partial<ChatCompletionCreateParamsStreaming> = {},
): ChatCompletionCreateParamsStreaming {
  return { ...ask(content), ...extra, stream: true };
}

function lastRequest(): UpstreamRequest {
  const entry = stub.requests.at(-1);
  if (!entry) throw new Error('the stub received no request');
  return entry;
}

async function collect(chunks: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
  const seen: ChatCompletionChunk[] = [];
  for await (const chunk of chunks) seen.push(chunk);
  return seen;
}

describe('prompt tokens', () => {
  it('are ceil(UTF-8 bytes / 4) plus 3 per message', () => {
    // 'You are terse.' is 14 bytes, 'hello' 5: ceil(19 / 4) + 2 × 3 = 11.
    expect(countPromptTokens(ask('hello'))).toBe(11);
    // Each of these characters is 3 bytes in UTF-8: ceil(6 / 4) + 3 = 5.
    expect(countPromptTokens({ messages: [{ role: 'user', content: '你好' }] })).toBe(5);
    const parts = [
      { type: 'text' as const, text: 'abcd' },
      { type: 'image_url' as const, image_url: { url: 'https://example.com/a.png' } },
      { type: 'text' as const, text: 'efgh' },
    ];
    expect(countPromptTokens({ messages: [{ role: 'user', content: parts }] })).toBe(2 + 3);
  });
});

describe('a chat completion through the SDK', () => {
  it('reports the usage the directives ask for, in OpenAI shape', async () => {
    const params = ask('Summarise. [[tokens=5]] [[cached=4]] [[reasoning=7]]', {
      model: 'o3-mini',
    });
    const completion = await client.chat.completions.create(params);

    const promptTokens = countPromptTokens(params);
    expect(completion).toMatchObject({
      object: 'chat.completion',
      model: 'o3-mini',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: completionText(5) },
          finish_reason: 'stop',
          logprobs: null,
        },
      ],
      usage: {
        prompt_tokens: promptTokens,
        completion_tokens: 5 + 7,
        total_tokens: promptTokens + 12,
        prompt_tokens_details: { cached_tokens: 4 },
        completion_tokens_details: { reasoning_tokens: 7 },
      },
    });
    expect(completion.id).toMatch(/^chatcmpl-/);
    expect(completion.created).toBeGreaterThan(1_700_000_000);
    expect(completion.choices[0]?.message.content).toBe('tok0 tok1 tok2 tok3 tok4 ');
  });

  it('answers 16 tokens by default and honours max_tokens and max_completion_tokens', async () => {
    const plain = await client.chat.completions.create(ask('hello'));
    expect(plain.usage?.completion_tokens).toBe(16);
    expect(plain.choices[0]?.finish_reason).toBe('stop');

    const capped = await client.chat.completions.create(ask('hello', { max_tokens: 5 }));
    expect(capped.usage?.completion_tokens).toBe(5);
    expect(capped.choices[0]?.finish_reason).toBe('length');

    const long = await client.chat.completions.create(
      ask('write a lot [[tokens=40]]', { max_completion_tokens: 10 }),
    );
    expect(long.usage?.completion_tokens).toBe(10);
    expect(long.choices[0]?.finish_reason).toBe('length');

    const many = await client.chat.completions.create(ask('write a lot [[tokens=40]]'));
    expect(many.usage?.completion_tokens).toBe(40);
  });

  it('reports the service tier it served at: the one asked for, else the project default', async () => {
    const tierOf = async (
      content: string,
      extra: Partial<ChatCompletionCreateParamsNonStreaming>,
    ) => (await client.chat.completions.create(ask(content, extra))).service_tier;
    expect(await tierOf('hello', {})).toBe('default');
    expect(await tierOf('hello', { service_tier: 'auto' })).toBe('default');
    expect(await tierOf('hello', { service_tier: 'flex' })).toBe('flex');
    expect(await tierOf('hello', { service_tier: 'priority' })).toBe('priority');
    expect(await tierOf('hello [[project-priority]]', {})).toBe('priority');
    expect(await tierOf('hello [[project-priority]]', { service_tier: 'auto' })).toBe('priority');
    expect(await tierOf('hello [[project-priority]]', { service_tier: 'default' })).toBe('default');
    const chunks = await collect(
      await client.chat.completions.create(
        askStream('hello [[tokens=2]] [[project-priority]]', {
          stream_options: { include_usage: true },
        }),
      ),
    );
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.every((chunk) => chunk.service_tier === 'priority')).toBe(true);
  });

  it('takes directives only from the last user message', async () => {
    const completion = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [
        { role: 'user', content: 'earlier [[tokens=9]]' },
        { role: 'assistant', content: 'ok' },
        {
          role: 'user',
          content: [{ type: 'text', text: 'now [[tokens=2]] [[prompt-tokens=1000]]' }],
        },
      ],
    });
    expect(completion.usage).toMatchObject({ prompt_tokens: 1000, completion_tokens: 2 });
  });

  it('omits usage on [[no-usage]]', async () => {
    const completion = await client.chat.completions.create(ask('hi [[no-usage]]'));
    expect(completion.usage).toBeUndefined();
  });

  it('answers with one tool call on [[tool-call]], whole or streamed piece by piece', async () => {
    const completion = await client.chat.completions.create(ask('call [[tool-call]] [[tokens=3]]'));
    expect(completion.choices[0]).toMatchObject({
      finish_reason: 'tool_calls',
      message: {
        content: null,
        tool_calls: [
          {
            id: 'call_stub',
            type: 'function',
            function: { name: 'f', arguments: completionText(3) },
          },
        ],
      },
    });
    const chunks = await collect(
      await client.chat.completions.create(askStream('call [[tool-call]] [[tokens=3]]')),
    );
    const args = chunks
      .map((chunk) => chunk.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? '')
      .join('');
    expect(args).toBe(completionText(3));
    expect(chunks[0]?.choices[0]?.delta?.tool_calls?.[0]?.function?.name).toBe('f');
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('tool_calls');
  });

  it('clamps cached tokens to the prompt tokens', async () => {
    const completion = await client.chat.completions.create(
      ask('hi [[prompt-tokens=10]] [[cached=50]]'),
    );
    expect(completion.usage?.prompt_tokens_details?.cached_tokens).toBe(10);
  });

  it('reports reasoning apart from completion_tokens, hidden thinking and cache writes as providers do', async () => {
    const apart = await client.chat.completions.create(
      ask('hi [[prompt-tokens=100]] [[tokens=5]] [[reasoning=7]] [[reasoning-apart]]'),
    );
    expect(apart.usage).toMatchObject({
      prompt_tokens: 100,
      completion_tokens: 5,
      total_tokens: 112,
      completion_tokens_details: { reasoning_tokens: 7 },
    });
    const hidden = await client.chat.completions.create(
      ask('hi [[prompt-tokens=100]] [[tokens=5]] [[hidden-reasoning=30]]'),
    );
    expect(hidden.usage).toMatchObject({
      prompt_tokens: 100,
      completion_tokens: 5,
      total_tokens: 135,
      completion_tokens_details: { reasoning_tokens: 0 },
    });
    const writes = await client.chat.completions.create(
      ask('hi [[prompt-tokens=100]] [[tokens=5]] [[cached=10]] [[cache-write=60]]'),
    );
    expect(writes.usage).toMatchObject({
      prompt_tokens: 100,
      total_tokens: 105,
      prompt_tokens_details: { cached_tokens: 10, cache_write_tokens: 60 },
    });
    const creation = await client.chat.completions.create(
      ask('hi [[prompt-tokens=100]] [[tokens=5]] [[cache-creation=40]]'),
    );
    expect(creation.usage).toMatchObject({ prompt_tokens: 100, cache_creation_input_tokens: 40 });
    const deepseek = await client.chat.completions.create(
      ask('hi [[prompt-tokens=100]] [[tokens=5]] [[cache-hit=70]]'),
    );
    expect(deepseek.usage).toMatchObject({
      prompt_tokens: 100,
      prompt_cache_hit_tokens: 70,
      prompt_cache_miss_tokens: 30,
    });
    expect(deepseek.usage).not.toHaveProperty('prompt_tokens_details');
  });

  it('waits [[delay=MS]] before answering', async () => {
    const startedAt = performance.now();
    await client.chat.completions.create(ask('hi [[delay=150]]'));
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(140);
  });
});

describe('a streamed chat completion', () => {
  it('streams a role chunk, one chunk per token and a finish chunk, without usage unless asked', async () => {
    const { data, response } = await client.chat.completions
      .create(askStream('count [[tokens=3]]'))
      .withResponse();
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const chunks = await collect(data);

    expect(chunks.map((chunk) => chunk.object)).toEqual(Array(5).fill('chat.completion.chunk'));
    expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(completionText(3));
    expect(chunks.map((chunk) => chunk.choices[0]?.finish_reason)).toEqual([
      null,
      null,
      null,
      null,
      'stop',
    ]);
    expect(chunks.every((chunk) => chunk.usage == null)).toBe(true);

    await stub.waitForIdle();
    // role + 3 tokens + finish + [DONE]
    expect(lastRequest()).toMatchObject({ status: 200, chunksSent: 6, clientDisconnected: false });
  });

  it('ends with a usage chunk (choices: []) only with stream_options.include_usage', async () => {
    const params = askStream('count [[tokens=4]] [[cached=2]] [[reasoning=3]]', {
      stream_options: { include_usage: true },
    });
    const chunks = await collect(await client.chat.completions.create(params));

    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    const promptTokens = countPromptTokens(params);
    expect(last?.usage).toMatchObject({
      prompt_tokens: promptTokens,
      completion_tokens: 7,
      total_tokens: promptTokens + 7,
      prompt_tokens_details: { cached_tokens: 2 },
      completion_tokens_details: { reasoning_tokens: 3 },
    });
    // Like OpenAI, the chunks before it say `usage: null`.
    expect(chunks.slice(0, -1).every((chunk) => chunk.usage === null)).toBe(true);

    const withoutUsage = await collect(
      await client.chat.completions.create({
        ...params,
        messages: [{ role: 'user', content: 'count [[tokens=4]] [[no-usage]]' }],
      }),
    );
    expect(withoutUsage.some((chunk) => chunk.usage)).toBe(false);
    expect(withoutUsage.at(-1)?.choices[0]?.finish_reason).toBe('stop');
  });

  it('stops generating when the client aborts mid-stream, and records how far it got', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      askStream('a long story [[tokens=200]] [[delay=50]]'),
      { signal: controller.signal },
    );
    let received = 0;
    // The SDK ends the iteration quietly when its own signal aborts a stream.
    for await (const _chunk of stream) {
      received++;
      if (received === 3) controller.abort();
    }
    expect(received).toBe(3);

    await stub.waitForIdle();
    const entry = lastRequest();
    expect(entry.clientDisconnected).toBe(true);
    expect(entry.chunksSent).toBeGreaterThanOrEqual(3);
    expect(entry.chunksSent).toBeLessThan(10);
  });

  it('goes silent after [[stall-after=K]] events, and sees the client leave', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      askStream('hang [[tokens=10]] [[stall-after=2]]'),
      { signal: controller.signal },
    );
    // The SDK's `timeout` stops at the response headers, so a stalled body needs a signal:
    // once the K events are in, 300 ms more without a third (a fixed wait, as it proves that
    // nothing comes) ends the wait.
    const chunks: ChatCompletionChunk[] = [];
    let watchdog: NodeJS.Timeout | undefined;
    for await (const chunk of stream) {
      chunks.push(chunk);
      if (chunks.length === 2) watchdog = setTimeout(() => controller.abort(), 300);
    }
    clearTimeout(watchdog);

    expect(chunks).toHaveLength(2);
    await stub.waitForIdle();
    expect(lastRequest()).toMatchObject({ chunksSent: 2, clientDisconnected: true });
  });

  it('sends a broken data: line on [[malformed]], which the SDK cannot parse', async () => {
    // The SDK logs the unparsable line before it throws; keep that out of the test output.
    const quiet = new OpenAI({
      baseURL: stub.url,
      apiKey: API_KEY,
      maxRetries: 0,
      logLevel: 'off',
    });
    const stream = await quiet.chat.completions.create(askStream('hi [[malformed]]'));
    await expect(collect(stream)).rejects.toThrow(SyntaxError);
  });
});

describe('failures', () => {
  it('answers [[fail=500]] with an OpenAI error the SDK raises as an APIError', async () => {
    const failure = await client.chat.completions.create(ask('hi [[fail=500]]')).catch((e) => e);
    expect(failure).toBeInstanceOf(APIError);
    expect(failure).toBeInstanceOf(InternalServerError);
    expect(failure).toMatchObject({ status: 500, type: 'server_error' });
    expect(lastRequest().status).toBe(500);
  });

  it('fails a stream before it starts, with any status', async () => {
    const failure = await client.chat.completions
      .create(askStream('hi [[fail=429]]'))
      .catch((e) => e);
    expect(failure).toBeInstanceOf(RateLimitError);
    expect(failure).toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
  });

  it('never answers on [[stall]], so the client times out and the stub sees it leave', async () => {
    const failure = await client.chat.completions
      .create(ask('hi [[stall]]'), { timeout: 200 })
      .catch((e) => e);
    expect(failure).toBeInstanceOf(APIConnectionTimeoutError);

    await stub.waitForIdle();
    expect(lastRequest()).toMatchObject({ status: null, clientDisconnected: true, settled: true });
  });

  it('sends headers and then nothing on [[stall-after]] without stream, beyond the SDK timeout', async () => {
    const controller = new AbortController();
    // A timeout the headers surely beat, even on a loaded machine.
    const pending = client.chat.completions
      .create(ask('hi [[stall-after=0]]'), { timeout: 1000, signal: controller.signal })
      .catch((e) => e);
    // The SDK's timeout covers only the wait for headers: twice as long later it still waits.
    const outcome = await Promise.race([
      pending,
      new Promise((resolve) => setTimeout(() => resolve('still waiting'), 2000)),
    ]);
    expect(outcome).toBe('still waiting');
    controller.abort();
    expect(await pending).toBeInstanceOf(Error);

    await stub.waitForIdle();
    expect(lastRequest()).toMatchObject({ status: 200, clientDisconnected: true });
  });

  it('answers 200 with a body that is not JSON on [[malformed]]', async () => {
    await expect(client.chat.completions.create(ask('hi [[malformed]]'))).rejects.toThrow(
      SyntaxError,
    );
  });

  it('rejects an unknown or out-of-range directive instead of ignoring it', async () => {
    const unknown = await client.chat.completions.create(ask('hi [[tokns=3]]')).catch((e) => e);
    expect(unknown).toBeInstanceOf(BadRequestError);
    expect(unknown.message).toContain('[[tokns]]');
    const outOfRange = await client.chat.completions.create(ask('hi [[fail=200]]')).catch((e) => e);
    expect(outOfRange).toBeInstanceOf(BadRequestError);
    const noSuchShape = await client.chat.completions
      .create(ask('hi [[sse=nope]]'))
      .catch((e) => e);
    expect(noSuchShape).toBeInstanceOf(BadRequestError);
    expect(noSuchShape.message).toContain('needs one of');
  });

  it('[[sse=SHAPE]] reshapes the stream into SSE the SDK still reads as the same chunks', async () => {
    const read = async (content: string) => {
      const stream = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content }],
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks: ChatCompletionChunk[] = [];
      for await (const chunk of stream) chunks.push(chunk);
      return chunks;
    };
    const plain = await read('hi [[tokens=3]] [[prompt-tokens=7]]');
    for (const shape of [
      'crlf',
      'no-space',
      'multiline',
      'comments',
      'fields',
      'done-twice',
      'done-spaced',
    ])
      expect(await read(`hi [[tokens=3]] [[prompt-tokens=7]] [[sse=${shape}]]`)).toEqual(
        // Each call has its own id and creation second (a second may turn between calls).
        plain.map((chunk) => ({ ...chunk, id: expect.any(String), created: expect.any(Number) })),
      );
  });

  it('requires the API key', async () => {
    const stranger = new OpenAI({ baseURL: stub.url, apiKey: 'sk-wrong', maxRetries: 0 });
    const failure = await stranger.models.list().catch((e) => e);
    expect(failure).toBeInstanceOf(AuthenticationError);
    expect(failure).toMatchObject({ status: 401, code: 'invalid_api_key' });
  });

  it('answers unknown paths with 404 and bad JSON with 400, in OpenAI error shape', async () => {
    const headers = { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' };
    const notFound = await fetch(`${stub.url}/completions/legacy`, {
      method: 'POST',
      headers,
      body: '{}',
    });
    expect(notFound.status).toBe(404);
    expect(await notFound.json()).toEqual({
      error: {
        message: 'Invalid URL (POST /v1/completions/legacy)',
        type: 'invalid_request_error',
        code: null,
        param: null,
      },
    });

    const badJson = await fetch(`${stub.url}/chat/completions`, {
      method: 'POST',
      headers,
      body: '{"model": ',
    });
    expect(badJson.status).toBe(400);
    expect(await badJson.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
    expect(lastRequest().body).toBe('{"model": ');
  });
});

describe('embeddings through the SDK', () => {
  it('decode the base64 the SDK asks for by default to the stub vectors', async () => {
    const input = ['the quick brown fox', '你好'];
    const response = await client.embeddings.create({ model: 'text-embedding-3-small', input });

    expect(lastRequest().body).toMatchObject({ encoding_format: 'base64' });
    expect(response.object).toBe('list');
    expect(response.model).toBe('text-embedding-3-small');
    expect(response.data.map((item) => item.embedding)).toEqual(
      input.map((text) => embedText(text)),
    );
    expect(response.data.map((item) => item.index)).toEqual([0, 1]);
    // ceil(19 / 4) + ceil(6 / 4)
    expect(response.usage).toEqual({ prompt_tokens: 7, total_tokens: 7 });
    expect(countEmbeddingTokens({ input })).toBe(7);
  });

  it('return plain floats when asked, and a single string input works', async () => {
    const response = await client.embeddings.create({
      model: 'text-embedding-3-small',
      input: 'hello',
      encoding_format: 'float',
      dimensions: 4,
    });
    expect(response.data).toEqual([
      { object: 'embedding', index: 0, embedding: embedText('hello', 4) },
    ]);
  });
});

describe('the stub itself', () => {
  it('lists models', async () => {
    const page = await client.models.list();
    expect(page.data.map((model) => model.id)).toEqual(MODEL_IDS);
    expect((await client.models.retrieve('gpt-4o')).id).toBe('gpt-4o');
  });

  it('logs what the SDK sent', async () => {
    await client.chat.completions.create(ask('hi [[tokens=1]]'));
    const entry = lastRequest();
    expect(entry).toMatchObject({
      method: 'POST',
      path: '/v1/chat/completions',
      status: 200,
      settled: true,
      body: ask('hi [[tokens=1]]'),
    });
    expect(entry.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(entry.headers['user-agent']).toMatch(/^OpenAI\/JS /);
    expect(entry.headers['x-stainless-retry-count']).toBe('0');
    expect(entry.time).toBeInstanceOf(Date);
  });

  it('applies setDefault() to requests whose directives do not say otherwise, until reset()', async () => {
    stub.setDefault({ tokens: 2, cachedTokens: 1 });
    const byDefault = await client.chat.completions.create(ask('hi'));
    expect(byDefault.usage).toMatchObject({
      completion_tokens: 2,
      prompt_tokens_details: { cached_tokens: 1 },
    });
    const overridden = await client.chat.completions.create(ask('hi [[tokens=3]]'));
    expect(overridden.usage).toMatchObject({
      completion_tokens: 3,
      prompt_tokens_details: { cached_tokens: 1 },
    });

    stub.setDefault('[[fail=503]]');
    await expect(client.chat.completions.create(ask('hi'))).rejects.toMatchObject({ status: 503 });
    expect(() => stub.setDefault('[[nope]]')).toThrow(/Unknown stub directive/);

    stub.reset();
    expect(stub.requests).toHaveLength(0);
    const afterReset = await client.chat.completions.create(ask('hi'));
    expect(afterReset.usage?.completion_tokens).toBe(16);
  });
});
