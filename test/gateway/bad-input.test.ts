import { afterAll, beforeAll, expect, test, vi } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { ledgerRowCounts } from '../support/ledger.js';
import { admin, startTestService, userWithKey, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig } from './fixtures.js';

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;
let apiKey: string;
let userId: string;

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  service = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, { http: { bodyLimitBytes: 4096 } }),
  });
  ({ apiKey, userId } = await userWithKey(service, { telegramId: 3001, balance: '10' }));
});
afterAll(async () => {
  await service?.stop();
  await stub?.close();
  await database?.drop();
});

const valid = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] };

async function post(
  body: string | object,
  headers: Record<string, string> = { authorization: `Bearer ${apiKey}` },
) {
  const response = await fetch(`${service.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: response.status,
    body: (await response.json()) as {
      error: { message: string; type: string; code: string; param: string | null };
    },
  };
}

const cases: Array<
  [
    string,
    () => Promise<{
      status: number;
      body: { error: { code: string; type: string; message: string; param: string | null } };
    }>,
    number,
    string,
    RegExp,
  ]
> = [
  ['no API key', () => post(valid, {}), 401, 'invalid_api_key', /missing API key/],
  [
    'a malformed API key',
    () => post(valid, { authorization: 'Bearer sk-not-ours' }),
    401,
    'invalid_api_key',
    /invalid API key/,
  ],
  [
    'an unknown API key',
    () => post(valid, { authorization: `Bearer lx-${'A'.repeat(43)}` }),
    401,
    'invalid_api_key',
    /invalid API key/,
  ],
  ['an unknown model', () => post({ ...valid, model: 'gpt-9' }), 404, 'model_not_found', /gpt-9/],
  [
    'invalid JSON',
    () => post('{"model": "gpt-4o-mini", "messages": ['),
    400,
    'invalid_request',
    /not valid JSON/,
  ],
  [
    'a body over the limit',
    () => post({ ...valid, messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
    413,
    'request_too_large',
    /larger than 4096 bytes/,
  ],
  [
    'max_tokens negative',
    () => post({ ...valid, max_tokens: -5 }),
    400,
    'invalid_request',
    /max_tokens: must be positive/,
  ],
  [
    'max_tokens huge',
    () => post({ ...valid, max_tokens: 10_000_000 }),
    400,
    'invalid_request',
    /max_tokens: at most 4096/,
  ],
  [
    'max_tokens a string',
    () => post({ ...valid, max_tokens: '100' }),
    400,
    'invalid_request',
    /max_tokens/,
  ],
  [
    'messages not a list',
    () => post({ ...valid, messages: 'hi' }),
    400,
    'invalid_request',
    /messages/,
  ],
  [
    'no messages',
    () => post({ ...valid, messages: [] }),
    400,
    'invalid_request',
    /at least one message/,
  ],
  [
    'a content part that is null',
    () => post({ ...valid, messages: [{ role: 'user', content: [null] }] }),
    400,
    'invalid_request',
    /^messages\.0\.content\.0: must be a content part/,
  ],
  [
    'a content part that is a string',
    () =>
      post({
        ...valid,
        messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, 'hi'] }],
      }),
    400,
    'invalid_request',
    /^messages\.0\.content\.1: must be a content part/,
  ],
  // Fees the price table cannot express: served, they would be undercharged.
  [
    'audio output (modalities)',
    () =>
      post({
        ...valid,
        modalities: ['text', 'audio'],
        audio: { voice: 'alloy', format: 'wav' },
      }),
    400,
    'feature_not_priced',
    /^modalities: .*audio.* has no price on `gpt-4o-mini`, so it is not served; nothing was charged$/,
  ],
  [
    'audio output (the audio parameter alone)',
    () => post({ ...valid, audio: { voice: 'alloy', format: 'mp3' } }),
    400,
    'feature_not_priced',
    /^audio: audio output has no price/,
  ],
  [
    'audio input (an input_audio part)',
    () =>
      post({
        ...valid,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What is said?' },
              { type: 'input_audio', input_audio: { data: 'UklGRiQAAABXQVZF', format: 'wav' } },
            ],
          },
        ],
      }),
    400,
    'feature_not_priced',
    /^messages\.0\.content\.1: audio input \(`input_audio`\) has no price/,
  ],
  [
    'web search (web_search_options)',
    () => post({ ...valid, web_search_options: { search_context_size: 'low' } }),
    400,
    'feature_not_priced',
    /^web_search_options: web search has no price/,
  ],
  [
    "OpenRouter's plugins (web search, PDF parsing)",
    () => post({ ...valid, plugins: [{ id: 'web', max_results: 5 }] }),
    400,
    'feature_not_priced',
    /^plugins: a provider plugin \(web search, file parsing\) has no price on `gpt-4o-mini`/,
  ],
  ['a model that is a number', () => post({ ...valid, model: 4 }), 400, 'invalid_request', /model/],
  ['a JSON array body', () => post('[1,2]'), 400, 'invalid_request', /JSON object/],
];

test.each(cases)(
  '%s: the documented error, nothing held or charged',
  async (_name, run, status, code, message) => {
    const before = await ledgerRowCounts(database.pool);
    const usageBefore = await database.pool.query('select count(*)::int as n from usage_records');
    const upstreamBefore = stub.requests.length;
    const response = await run();
    expect(response.status).toBe(status);
    expect(response.body.error.code).toBe(code);
    expect(response.body.error.message).toMatch(message);
    expect(Object.keys(response.body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
    expect(
      (await database.pool.query('select count(*)::int as n from usage_records')).rows[0].n,
    ).toBe(usageBefore.rows[0].n);
    expect(stub.requests.length).toBe(upstreamBefore);
  },
);

test('a content part that is not an object: 400 naming the part, as OpenAI shapes it', async () => {
  const response = await post({
    ...valid,
    messages: [
      { role: 'system', content: 'terse' },
      { role: 'user', content: [{ type: 'text', text: 'hi' }, null] },
    ],
  });
  expect(response).toEqual({
    status: 400,
    body: {
      error: {
        message: 'messages.1.content.1: must be a content part (an object)',
        type: 'invalid_request_error',
        code: 'invalid_request',
        param: 'messages.1.content.1',
      },
    },
  });
});

test('a revoked key stops working at once', async () => {
  const fresh = await userWithKey(service, { telegramId: 3002, balance: '1' });
  expect((await post(valid, { authorization: `Bearer ${fresh.apiKey}` })).status).toBe(200);
  // Revoked by another process: this one hears of it only by NOTIFY. Waits until its
  // listener has it (not a fixed time: the notification's trip is longer on a loaded machine).
  const heard = vi.spyOn(service.http.services.keys, 'invalidate');
  try {
    await database.pool.query(`update api_keys set revoked_at = now() where id = $1`, [
      fresh.keyId,
    ]);
    await database.pool.query(`select pg_notify('lingxi_keys', 'changed')`);
    await vi.waitFor(() => expect(heard).toHaveBeenCalled(), { timeout: 20_000 });
  } finally {
    heard.mockRestore();
  }
  const refused = await post(valid, { authorization: `Bearer ${fresh.apiKey}` });
  expect(refused.status).toBe(401);
  expect(refused.body.error.message).toMatch(/revoked/);
});

test('a key limited to some models gets 403 for the others', async () => {
  const limited = await userWithKey(service, {
    telegramId: 3003,
    balance: '1',
    key: { allowedModels: ['precise'] },
  });
  const refused = await post(valid, { authorization: `Bearer ${limited.apiKey}` });
  expect(refused.status).toBe(403);
  expect(refused.body.error.code).toBe('model_not_allowed');
});

test("a key's spend limit refuses calls it cannot cover, with 402", async () => {
  const limited = await userWithKey(service, {
    telegramId: 3004,
    balance: '5',
    key: { spendLimitUsd: '0.0002' },
  });
  const headers = { authorization: `Bearer ${limited.apiKey}` };
  const small = { ...valid, max_tokens: 10 };
  expect((await post(small, headers)).status).toBe(200);
  const big = await post({ ...valid, max_tokens: 4000 }, headers);
  expect(big.status).toBe(402);
  expect(big.body.error).toMatchObject({
    type: 'insufficient_quota',
    code: 'spend_limit_exceeded',
  });
  const { rows } = await database.pool.query(
    `select spent_usd::text, reserved_usd::text from api_keys where id = $1`,
    [limited.keyId],
  );
  expect(new Decimal(rows[0].reserved_usd).isZero()).toBe(true);
  expect(new Decimal(rows[0].spent_usd).gt(0)).toBe(true);
});

test('too many requests for a key: 429 with retry-after', async () => {
  const local = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, {
      gateway: { rateLimit: { requestsPerMinute: 2, tokensPerMinute: 1_000_000 } },
    }),
  });
  try {
    const user = await userWithKey(local, { telegramId: 3005, balance: '1' });
    const call = () =>
      fetch(`${local.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${user.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ ...valid, max_tokens: 5 }),
      });
    expect((await call()).status).toBe(200);
    expect((await call()).status).toBe(200);
    const limited = await call();
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(((await limited.json()) as { error: { code: string } }).error.code).toBe(
      'rate_limit_exceeded',
    );
    const { rows } = await database.pool.query(
      `select outcome from usage_records where user_id = $1 order by id`,
      [user.userId],
    );
    expect(rows.map((r) => r.outcome)).toEqual(['ok', 'ok', 'rate_limited']);
  } finally {
    await local.stop();
  }
});

test('the admin API refuses a missing or wrong token', async () => {
  const none = await fetch(`${service.url}/admin/users/${userId}/balance`);
  expect(none.status).toBe(401);
  const wrong = await fetch(`${service.url}/admin/users/${userId}/balance`, {
    headers: { authorization: 'Bearer nope' },
  });
  expect(wrong.status).toBe(401);
  expect((await admin(service, 'GET', `/users/${userId}/balance`)).status).toBe(200);
});
