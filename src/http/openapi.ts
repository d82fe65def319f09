import { z } from 'zod';
import { chatRequestSchema, embeddingRequestSchema } from '../gateway/requests.js';

/**
 * The OpenAPI 3.1 description of every HTTP route, served at `GET /openapi.json`.
 * test/http/openapi.test.ts walks the app's routers and fails when a served route is missing
 * here or a documented one is not served: add a route, describe it here.
 */

/** A JSON Schema (2020-12, as OpenAPI 3.1 uses it). */
export type JsonSchema = { [keyword: string]: unknown };

export interface ResponseObject {
  description: string;
  headers?: Record<string, { $ref: string } | { description: string; schema: JsonSchema }>;
  content?: Record<string, { schema: JsonSchema; example?: unknown }>;
}

export interface ParameterObject {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  description?: string;
  schema: JsonSchema;
}

export interface RequestBodyObject {
  required?: boolean;
  description?: string;
  content: Record<string, { schema: JsonSchema; example?: unknown }>;
}

export interface OperationObject {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  security?: Array<Record<string, string[]>>;
  parameters?: Array<ParameterObject | { $ref: string }>;
  requestBody?: RequestBodyObject;
  responses: Record<string, ResponseObject | { $ref: string }>;
}

export type HttpMethod = 'get' | 'post' | 'patch' | 'delete';
export type PathItem = Partial<Record<HttpMethod, OperationObject>>;

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  tags: Array<{ name: string; description: string }>;
  paths: Record<string, PathItem>;
  components: {
    schemas: Record<string, JsonSchema>;
    responses: Record<string, ResponseObject>;
    parameters: Record<string, ParameterObject>;
    headers: Record<string, { description: string; schema: JsonSchema }>;
    securitySchemes: Record<string, { type: 'http'; scheme: 'bearer'; description: string }>;
  };
}

// --- building blocks --------------------------------------------------------------------

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const str: JsonSchema = { type: 'string' };
const int: JsonSchema = { type: 'integer' };
const bool: JsonSchema = { type: 'boolean' };
const time: JsonSchema = { type: 'string', format: 'date-time' };
const decimal: JsonSchema = {
  type: 'string',
  pattern: '^-?\\d+(\\.\\d+)?$',
  description: 'an exact decimal amount, as a string (never a JSON number)',
};
const nullable = (schema: JsonSchema): JsonSchema => ({ anyOf: [schema, { type: 'null' }] });
const object = (properties: Record<string, JsonSchema>, optional: string[] = []): JsonSchema => ({
  type: 'object',
  properties,
  required: Object.keys(properties).filter((key) => !optional.includes(key)),
});
const list = (items: JsonSchema): JsonSchema => ({ type: 'array', items });
const page = (items: JsonSchema): JsonSchema =>
  object({ data: list(items), nextCursor: nullable(str) });

const requestIdHeader = { $ref: '#/components/headers/XRequestId' };

function json(description: string, schema: JsonSchema, example?: unknown): ResponseObject {
  return {
    description,
    headers: { 'x-request-id': requestIdHeader },
    content: { 'application/json': example === undefined ? { schema } : { schema, example } },
  };
}

function file(description: string, contentType: string): ResponseObject {
  return {
    description,
    headers: {
      'x-request-id': requestIdHeader,
      'content-disposition': { description: 'attachment; filename="..."', schema: str },
    },
    content: { [contentType]: { schema: { type: 'string' } } },
  };
}

/** An error answer: the contract's error body, with the codes this route may send. */
function error(codes: string[], when: string): ResponseObject {
  return {
    description: `${when} Codes: ${codes.map((c) => `\`${c}\``).join(', ')}.`,
    headers: { 'x-request-id': requestIdHeader },
    content: { 'application/json': { schema: ref('Error') } },
  };
}

/** An error answer that says when to try again (`retry-after`, in seconds). */
function retryLater(description: string): ResponseObject {
  return {
    description,
    headers: {
      'x-request-id': requestIdHeader,
      'retry-after': { description: 'seconds to wait', schema: int },
    },
    content: { 'application/json': { schema: ref('Error') } },
  };
}

/** 502 `upstream_error`: with the provider's own `retry-after` when it sent one. */
function upstreamFailed(when: string): ResponseObject {
  const response = error(['upstream_error'], when);
  return {
    ...response,
    headers: {
      ...response.headers,
      'retry-after': {
        description: "seconds to wait, when the provider said (its 429 or 503's retry-after)",
        schema: int,
      },
    },
  };
}

const commonErrors = {
  '500': { $ref: '#/components/responses/InternalError' },
  '503': { $ref: '#/components/responses/ServiceUnavailable' },
} as const;

/** What every route that reads a JSON body may answer before it looks at it. */
const bodyTooLarge = { '413': { $ref: '#/components/responses/RequestTooLarge' } } as const;

function body(schema: JsonSchema, example?: unknown): RequestBodyObject {
  return {
    required: true,
    content: { 'application/json': example === undefined ? { schema } : { schema, example } },
  };
}

const pathParam = (name: string, description: string): ParameterObject => ({
  name,
  in: 'path',
  required: true,
  description,
  schema: str,
});
const query = (name: string, description: string, schema: JsonSchema = str): ParameterObject => ({
  name,
  in: 'query',
  description,
  schema,
});
const idempotencyKey = { $ref: '#/components/parameters/IdempotencyKey' };
const userId = pathParam('id', 'the user id');

const apiKey = [{ ApiKey: [] }];
const account = [{ ApiKey: [] }, { SessionToken: [] }];
const admin = [{ AdminToken: [] }];

const adminAuthErrors = {
  '401': error(['invalid_admin_token'], 'No or a wrong admin token.'),
  '403': error(['admin_disabled'], 'No adminToken is configured: the admin API is off.'),
};
const accountAuthErrors = {
  '401': error(
    [
      'missing_credentials',
      'invalid_credentials',
      'invalid_api_key',
      'invalid_session',
      'session_revoked',
      'session_expired',
    ],
    'No, a malformed, an unknown, a revoked or an expired credential.',
  ),
  '403': error(['account_suspended', 'account_erased'], 'The account is suspended or erased.'),
};

/** The zod schema the gateway validates with, as JSON Schema (its other fields pass through). */
function fromZod(schema: z.ZodType): JsonSchema {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io: 'input' }) as JsonSchema;
  return rest;
}

// --- schemas ----------------------------------------------------------------------------

const balance = object({
  currency: { const: 'USD' },
  available: decimal,
  posted: decimal,
  held: decimal,
});

const profile = {
  id: str,
  telegramId: nullable(str),
  username: nullable(str),
  firstName: nullable(str),
  lastName: nullable(str),
  photoUrl: nullable(str),
  status: { type: 'string', enum: ['active', 'suspended', 'erased'] },
  createdAt: time,
  lastLoginAt: nullable(time),
};

const adminUserView = object({
  ...profile,
  updatedAt: time,
  suspendedAt: nullable(time),
  suspensionReason: nullable(str),
  erasedAt: nullable(time),
});

const keyView = object({
  id: str,
  name: str,
  prefix: str,
  spendLimitUsd: nullable(decimal),
  spentUsd: decimal,
  allowedModels: nullable(list(str)),
  createdAt: time,
  lastUsedAt: nullable(time),
  revokedAt: nullable(time),
});

const revokedKey = object({
  id: str,
  revokedAt: time,
  alreadyRevoked: {
    type: 'boolean',
    description:
      'true when the key was revoked before: revokedAt is that time, nothing was written',
  },
});

const createdKey = object({
  id: str,
  key: { type: 'string', description: 'the secret: shown once, only its hash is stored' },
  prefix: str,
  name: str,
  spendLimitUsd: nullable(decimal),
  allowedModels: nullable(list(str)),
  createdAt: time,
});

const createKeyRequest = object(
  {
    name: { type: 'string', maxLength: 100 },
    spendLimitUsd: { ...decimal, description: 'USD the key may spend in total' },
    allowedModels: { ...list(str), maxItems: 100, description: 'model ids; all when absent' },
  },
  ['name', 'spendLimitUsd', 'allowedModels'],
);

const updateKeyRequest = {
  ...object(
    {
      spendLimitUsd: {
        ...nullable(decimal),
        description: 'USD the key may spend in total (what it spent counts); null lifts the limit',
      },
      allowedModels: {
        ...nullable({ ...list(str), maxItems: 100 }),
        description: 'model ids; null for every model',
      },
    },
    ['spendLimitUsd', 'allowedModels'],
  ),
  additionalProperties: false,
  minProperties: 1,
};

const updatedKey = {
  allOf: [
    keyView,
    object({
      userId: str,
      changed: {
        type: 'boolean',
        description: 'false when the key already had these values: nothing was written',
      },
    }),
  ],
};

const finding = object(
  {
    severity: { type: 'string', enum: ['error', 'warning', 'info'] },
    kind: str,
    account: str,
    currency: str,
    network: str,
    asset: str,
    address: str,
    expected: nullable(str),
    actual: nullable(str),
    difference: nullable(str),
    details: { type: 'object' },
    fingerprint: {
      type: 'string',
      description:
        'the same problem has the same fingerprint in every run; alerts and acknowledgements are keyed by it',
    },
  },
  ['account', 'currency', 'network', 'asset', 'address'],
);

const schemas: Record<string, JsonSchema> = {
  Error: object({
    error: object({
      message: { type: 'string', description: 'what went wrong, for a person' },
      type: {
        type: 'string',
        description:
          "OpenAI's error type: invalid_request_error, insufficient_quota, requests, api_error",
      },
      code: { ...nullable(str), description: 'stable, for programs: see docs/api.md' },
      param: { ...nullable(str), description: 'the request field at fault, if one is' },
    }),
  }),
  Balance: balance,
  ChatCompletionRequest: fromZod(chatRequestSchema),
  EmbeddingRequest: fromZod(embeddingRequestSchema),
  ChatCompletion: {
    type: 'object',
    description: "OpenAI's chat.completion object, as the provider sent it (model renamed)",
    properties: {
      id: str,
      object: { const: 'chat.completion' },
      created: int,
      model: str,
      choices: list({ type: 'object' }),
      usage: ref('Usage'),
    },
    required: ['id', 'object', 'model', 'choices'],
  },
  EmbeddingList: {
    type: 'object',
    description: "OpenAI's embedding list, as the provider sent it (model renamed)",
    properties: {
      object: { const: 'list' },
      data: list({ type: 'object' }),
      model: str,
      usage: ref('Usage'),
    },
    required: ['object', 'data', 'model'],
  },
  Usage: {
    type: 'object',
    properties: {
      prompt_tokens: int,
      completion_tokens: int,
      total_tokens: int,
      prompt_tokens_details: { type: 'object', properties: { cached_tokens: int } },
      completion_tokens_details: { type: 'object', properties: { reasoning_tokens: int } },
    },
  },
  ModelList: object({
    object: { const: 'list' },
    data: list(
      object({
        id: str,
        object: { const: 'model' },
        created: int,
        owned_by: { type: 'string', description: 'the provider' },
        type: { type: 'string', enum: ['chat', 'embedding'] },
        pricing: object({
          currency: { const: 'USD' },
          per: { const: '1M tokens' },
          input: decimal,
          cached_input: decimal,
          cache_write: decimal,
          output: decimal,
          reasoning: decimal,
          version: { type: 'string', description: 'price version: usage rows name the one used' },
        }),
      }),
    ),
  }),
  AccountProfile: object({
    ...profile,
    balance,
    auth: object(
      {
        via: { type: 'string', enum: ['api_key', 'session'] },
        keyId: str,
        sessionId: str,
      },
      ['keyId', 'sessionId'],
    ),
  }),
  AdminUser: adminUserView,
  AdminUserDetail: {
    allOf: [adminUserView, object({ balance, keys: list(keyView) })],
  },
  ApiKey: keyView,
  CreatedApiKey: createdKey,
  CreateApiKeyRequest: createKeyRequest,
  UpdateApiKeyRequest: updateKeyRequest,
  UpdatedApiKey: updatedKey,
  SignIn: object({
    token: { type: 'string', description: 'lxs-...: a session token, shown once' },
    tokenType: { const: 'Bearer' },
    sessionId: str,
    expiresAt: time,
    userId: str,
    created: { type: 'boolean', description: 'true when this sign-in created the user' },
  }),
  UsageRecord: object({
    id: str,
    requestId: str,
    keyId: nullable(str),
    endpoint: { type: 'string', enum: ['chat.completions', 'embeddings'] },
    model: str,
    provider: nullable(str),
    stream: bool,
    promptTokens: str,
    cachedTokens: str,
    cacheWriteTokens: str,
    completionTokens: str,
    reasoningTokens: str,
    costUsd: decimal,
    shortfallUsd: decimal,
    estimated: bool,
    startedAt: time,
    finishedAt: time,
    latencyMs: int,
    httpStatus: int,
    outcome: str,
  }),
  Statement: object({
    account: str,
    currency: { const: 'USD' },
    from: nullable(time),
    to: nullable(time),
    openingBalance: decimal,
    closingBalance: decimal,
    totalIn: decimal,
    totalOut: decimal,
    lineCount: int,
    lines: list(
      object({
        sequence: str,
        entryId: str,
        kind: str,
        description: nullable(str),
        createdAt: time,
        effectiveAt: time,
        amount: { ...decimal, description: 'signed from the user side: top-ups positive' },
        runningBalance: decimal,
        reversesEntryId: nullable(str),
        metadata: { type: 'object' },
      }),
    ),
    nextCursor: nullable(str),
  }),
  DepositAddress: object({
    network: str,
    address: nullable(str),
    derivationPath: nullable(str),
    assets: list(
      object({ symbol: str, contract: nullable(str), decimals: int, minDeposit: decimal }),
    ),
    confirmations: { type: 'string', description: 'a count, "finalized" or "solidified"' },
    unavailable: nullable(
      object({
        code: {
          type: 'string',
          description:
            '`deposits_not_configured` (no xpub for the family), `deposit_key_mismatch` (the configured xpub is not the key the last address was assigned under) or `deposit_key_invalid` (the configured xpub does not parse)',
        },
        message: str,
      }),
    ),
  }),
  Deposit: object({
    id: str,
    network: str,
    asset: nullable(str),
    amount: nullable(decimal),
    txHash: str,
    logIndex: int,
    blockNumber: str,
    confirmations: int,
    confirmationsRequired: str,
    status: {
      type: 'string',
      description: 'seen, confirming, credited, ignored, orphaned, reversed',
    },
    amountUsd: nullable(decimal),
    rate: nullable(decimal),
    rateSource: nullable(str),
    ignoreReason: nullable(str),
    firstSeenAt: time,
    creditedAt: nullable(time),
  }),
  Erasure: object(
    {
      id: str,
      status: { const: 'erased' },
      erasedAt: time,
      keysRevoked: int,
      sessionsEnded: int,
      usageRowsScrubbed: int,
      unclaimedBalance: nullable(
        object({
          amount: decimal,
          currency: { const: 'USD' },
          account: str,
          entryId: { ...nullable(str), description: 'null when there was nothing to move' },
        }),
      ),
    },
    ['unclaimedBalance'],
  ),
  TrialBalance: object({
    accounts: list(
      object({ account: str, currency: str, debit: decimal, credit: decimal, balance: decimal }),
    ),
    totals: list(
      object({
        currency: str,
        debit: decimal,
        credit: decimal,
        net: { ...decimal, description: 'always "0": the books balance' },
      }),
    ),
  }),
  AuditEntry: object({
    id: str,
    at: time,
    actor: str,
    action: str,
    target: nullable(str),
    details: { type: 'object' },
    ip: nullable(str),
    requestId: nullable(str),
  }),
  ReconciliationRun: object({
    runId: str,
    status: { type: 'string', enum: ['clean', 'findings', 'failed'] },
    startedAt: time,
    finishedAt: time,
    blocks: {
      type: 'object',
      additionalProperties: str,
      description: 'per network, the block the chain was compared at',
    },
    findings: list(finding),
    stats: { type: 'object' },
    error: {
      ...nullable(str),
      description:
        'why a failed run failed (`abandoned: ...` for one whose process stopped midway, marked by a later run); null for one that completed',
    },
  }),
  PublicConfig: object({
    telegramBot: nullable(str),
    devSignIn: bool,
    networks: list(
      object({
        name: str,
        kind: { type: 'string', enum: ['evm', 'tron'] },
        chainId: nullable(int),
        confirmations: str,
        assets: list(object({ symbol: str, decimals: int, minDeposit: decimal, native: bool })),
      }),
    ),
  }),
};

// --- routes -----------------------------------------------------------------------------

const paths: Record<string, PathItem> = {
  '/livez': {
    get: {
      operationId: 'livez',
      summary: 'Liveness: the process answers',
      tags: ['operations'],
      responses: { '200': json('Alive.', object({ status: { const: 'ok' } })) },
    },
  },
  '/readyz': {
    get: {
      operationId: 'readyz',
      summary: 'Readiness: the database answers and the process is not shutting down',
      description:
        'A load balancer sends traffic only while this is 200. It turns 503 at once on SIGTERM (the process still serves for http.shutdownDelayMs) and when the database does not answer within 2 s.',
      tags: ['operations'],
      responses: {
        '200': json('Ready.', object({ status: { const: 'ok' }, database: { const: 'ok' } })),
        '503': json(
          'Not ready.',
          object(
            {
              status: { type: 'string', enum: ['shutting_down', 'unavailable'] },
              database: { type: 'string', enum: ['unreachable', 'timeout'] },
            },
            ['database'],
          ),
        ),
      },
    },
  },
  '/healthz': {
    get: {
      operationId: 'healthz',
      summary: 'The same as /readyz (the contract name)',
      tags: ['operations'],
      responses: {
        '200': json('Ready.', object({ status: { const: 'ok' }, database: { const: 'ok' } })),
        '503': json('Not ready.', object({ status: str, database: str }, ['database'])),
      },
    },
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      summary: 'Prometheus metrics of this process (behind `metricsToken` when it is set)',
      tags: ['operations'],
      responses: {
        '200': {
          description: 'Prometheus text exposition format.',
          content: { 'text/plain': { schema: str } },
        },
        '401': error(['invalid_metrics_token'], 'metricsToken is set: no or a wrong token.'),
      },
    },
  },
  '/openapi.json': {
    get: {
      operationId: 'openapi',
      summary: 'This document',
      tags: ['operations'],
      responses: { '200': json('OpenAPI 3.1.', { type: 'object' }) },
    },
  },

  '/v1/models': {
    get: {
      operationId: 'listModels',
      summary: 'The priced models the key can call, with their prices',
      tags: ['gateway'],
      security: apiKey,
      responses: {
        '200': json('The models.', ref('ModelList')),
        '401': error(['invalid_api_key'], 'No, an unknown or a revoked API key.'),
        '403': error(
          ['account_suspended', 'account_erased'],
          'The account is suspended or erased.',
        ),
        ...commonErrors,
      },
    },
  },
  '/v1/chat/completions': {
    post: {
      operationId: 'createChatCompletion',
      summary: 'A chat completion, streamed or not (OpenAI-compatible)',
      description:
        'The most the call can cost is held on the balance first (402 when it cannot be); the hold is settled for the exact cost of the tokens used. With `stream: true` the answer is server-sent events: `data: {chat.completion.chunk}` lines, then `data: [DONE]`; usage is asked of the provider and settled at the end (the usage chunk reaches the client only when it set `stream_options.include_usage`). A stream that fails midway ends with a `data: {"error": {...}}` event and is charged only for what was generated.',
      tags: ['gateway'],
      security: apiKey,
      requestBody: body(ref('ChatCompletionRequest'), {
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'Hello' }],
      }),
      responses: {
        '200': {
          description:
            'The completion (JSON), or with `stream: true` the event stream. `x-lingxi-cost` is the USD charged (JSON answers).',
          headers: {
            'x-request-id': requestIdHeader,
            'x-lingxi-cost': { $ref: '#/components/headers/XLingxiCost' },
          },
          content: {
            'application/json': { schema: ref('ChatCompletion') },
            'text/event-stream': {
              schema: {
                type: 'string',
                description: 'data: {chat.completion.chunk}\\n\\n ... data: [DONE]',
              },
            },
          },
        },
        '400': error(
          ['invalid_request', 'feature_not_priced', 'upstream_rejected_request'],
          'The body is not JSON or not a valid request; or it asks for a feature without a price (audio, web search, a service tier above standard; nothing sent); or the provider rejected the request (400, 404 or 422 upstream; nothing charged).',
        ),
        '401': error(['invalid_api_key'], 'No, an unknown or a revoked API key.'),
        '402': error(
          ['insufficient_balance', 'spend_limit_exceeded'],
          "The balance (or the key's spend limit) cannot cover the most this call may cost. Type `insufficient_quota`.",
        ),
        '403': error(
          ['model_not_allowed', 'account_suspended', 'account_erased'],
          'The key may not use this model, or the account is suspended or erased.',
        ),
        '404': error(['model_not_found'], 'No such model.'),
        '413': error(['request_too_large'], 'The body is larger than http.bodyLimitBytes.'),
        '429': { $ref: '#/components/responses/RateLimited' },
        '502': upstreamFailed(
          'The provider failed (5xx, 401, 403, 429) or answered garbage; nothing charged.',
        ),
        '504': error(
          ['upstream_timeout', 'deadline_exceeded'],
          'The provider did not answer in time, or the call reached its time limit (gateway.maxCallDurationMs) waiting for it; nothing charged.',
        ),
        ...commonErrors,
      },
    },
  },
  '/v1/embeddings': {
    post: {
      operationId: 'createEmbedding',
      summary: 'Embeddings (OpenAI-compatible)',
      tags: ['gateway'],
      security: apiKey,
      requestBody: body(ref('EmbeddingRequest'), {
        model: 'text-embedding-3-small',
        input: 'Hello',
      }),
      responses: {
        '200': {
          description: 'The embeddings; `x-lingxi-cost` is the USD charged.',
          headers: {
            'x-request-id': requestIdHeader,
            'x-lingxi-cost': { $ref: '#/components/headers/XLingxiCost' },
          },
          content: { 'application/json': { schema: ref('EmbeddingList') } },
        },
        '400': error(
          ['invalid_request', 'upstream_rejected_request'],
          'The body is not JSON or not a valid request; or the provider rejected the request (400, 404 or 422 upstream; nothing charged).',
        ),
        '401': error(['invalid_api_key'], 'No, an unknown or a revoked API key.'),
        '402': error(
          ['insufficient_balance', 'spend_limit_exceeded'],
          'The balance cannot cover the call. Type `insufficient_quota`.',
        ),
        '403': error(['model_not_allowed', 'account_suspended', 'account_erased'], 'Not allowed.'),
        '404': error(['model_not_found'], 'No such embedding model.'),
        '413': error(['request_too_large'], 'The body is too large.'),
        '429': { $ref: '#/components/responses/RateLimited' },
        '502': upstreamFailed('The provider failed; nothing charged.'),
        '504': error(
          ['upstream_timeout', 'deadline_exceeded'],
          'The provider timed out, or the call reached its time limit; nothing charged.',
        ),
        ...commonErrors,
      },
    },
  },

  '/api/auth/telegram': {
    post: {
      operationId: 'signInWithTelegram',
      summary: 'Sign in with the Telegram Login Widget: a session token out',
      tags: ['account'],
      requestBody: body(
        {
          type: 'object',
          description:
            "the widget's data as it hands it over: id, first_name, last_name, username, photo_url, auth_date, hash",
          required: ['id', 'auth_date', 'hash'],
          additionalProperties: { type: ['string', 'integer'] },
        },
        { id: 123, first_name: 'Ada', username: 'ada', auth_date: 1767225600, hash: '<64 hex>' },
      ),
      responses: {
        '200': json('Signed in.', ref('SignIn')),
        '400': error(['invalid_request'], 'Not a widget payload.'),
        '401': error(
          ['invalid_telegram_auth', 'telegram_auth_expired', 'telegram_auth_replayed'],
          'The hash does not match, the payload is too old or was used before.',
        ),
        '403': error(['account_suspended'], 'The account is suspended.'),
        ...bodyTooLarge,
        ...commonErrors,
        '503': error(
          ['telegram_not_configured', 'service_unavailable'],
          'No telegram.botToken is configured, or the database cannot be reached (then with retry-after).',
        ),
      },
    },
  },
  '/api/auth/dev': {
    post: {
      operationId: 'signInDev',
      summary: 'Development sign-in (only when turned on, only from loopback)',
      description:
        'Exists only when telegram.devSignIn is true (never with telegram.botToken); answers only clients on the same machine.',
      tags: ['account'],
      requestBody: body(
        object({ telegramId: { type: ['integer', 'string'] }, username: str }, ['username']),
      ),
      responses: {
        '200': json('Signed in.', ref('SignIn')),
        '400': error(['invalid_request'], 'A bad telegramId or username.'),
        '403': error(['dev_sign_in_local_only'], 'The client is not on this machine.'),
        '404': error(['not_found'], 'telegram.devSignIn is off: this route does not exist.'),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/api/auth/logout': {
    post: {
      operationId: 'signOut',
      summary: 'Sign the session out',
      tags: ['account'],
      security: account,
      responses: {
        '200': json('Signed out.', object({ sessionId: str, revokedAt: time })),
        '400': error(['not_a_session'], 'Called with an API key: revoke keys instead.'),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/api/config': {
    get: {
      operationId: 'publicConfig',
      summary: 'What the dashboard needs before sign-in: sign-in methods and networks',
      tags: ['dashboard'],
      responses: { '200': json('The public configuration.', ref('PublicConfig')) },
    },
  },
  '/api/me': {
    get: {
      operationId: 'getMe',
      summary: 'The profile and the balance',
      tags: ['account'],
      security: account,
      responses: {
        '200': json('The account.', ref('AccountProfile')),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
    delete: {
      operationId: 'eraseMe',
      summary: 'Erasure: personal data removed or pseudonymised, keys revoked, books kept',
      tags: ['account'],
      security: account,
      requestBody: body(object({ confirm: { const: 'erase my account' } }), {
        confirm: 'erase my account',
      }),
      responses: {
        '200': json('Erased.', ref('Erasure')),
        '400': error(
          ['confirmation_required', 'invalid_request'],
          'The body does not confirm, or is not JSON.',
        ),
        '401': accountAuthErrors['401'],
        '403': error(
          ['key_restricted', 'account_suspended', 'account_erased'],
          'A restricted key, or a suspended or erased account (a retry of an erasure that went through, with its session or its API key, or one that ran at the same time).',
        ),
        '409': error(['calls_in_flight'], 'API calls are holding part of the balance; retry.'),
        ...bodyTooLarge,
        ...commonErrors,
        '500': error(
          ['erasure_incomplete', 'internal_error'],
          'The account was erased but its balance could not be moved yet (`erasure_incomplete`: it stays owed, and the retention job moves it), or an unexpected error. Type `api_error`.',
        ),
      },
    },
  },
  '/api/me/balance': {
    get: {
      operationId: 'getMyBalance',
      summary: 'The USD balance',
      tags: ['account'],
      security: account,
      responses: {
        '200': json('The balance.', ref('Balance')),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/api/me/export': {
    get: {
      operationId: 'exportMe',
      summary: 'Everything held about the user, as one JSON document (portability)',
      tags: ['account'],
      security: account,
      responses: {
        '200': file('The export (lingxi-account-export/1), streamed.', 'application/json'),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/api/me/usage': {
    get: {
      operationId: 'listMyUsage',
      summary: 'Usage records, newest first, cursor-paginated',
      tags: ['account'],
      security: account,
      parameters: [
        query(
          'from',
          'inclusive start: a date (UTC midnight) or an ISO time with a zone, exact to the microsecond',
        ),
        query('to', 'exclusive end, same forms'),
        query('limit', '1-500, default 50', { type: 'integer', minimum: 1, maximum: 500 }),
        query('cursor', "the previous page's nextCursor"),
        query('model', 'one model id'),
      ],
      responses: {
        '200': json('A page of usage records.', page(ref('UsageRecord'))),
        '400': error(['invalid_request'], 'A bad range, limit or cursor.'),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/api/me/statement': {
    get: {
      operationId: 'getMyStatement',
      summary: "Ledger lines of the user's balance with the running balance",
      tags: ['account'],
      security: account,
      parameters: [
        query(
          'from',
          'inclusive start: a date (UTC midnight) or an ISO time with a zone, exact to the microsecond',
        ),
        query('to', 'exclusive end, same forms; periods that meet chain exactly'),
        query('format', 'json (default) or csv', { type: 'string', enum: ['json', 'csv'] }),
        query('limit', 'json only: 1-5000, default 500', { type: 'integer' }),
        query('cursor', "json only: the previous page's nextCursor"),
      ],
      responses: {
        '200': {
          description:
            'The statement: JSON, or with format=csv the exports statement file (timestamp,entry_id,kind,description,amount,balance,currency,rate,rate_source,chain_ref).',
          headers: { 'x-request-id': requestIdHeader },
          content: {
            'application/json': { schema: ref('Statement') },
            'text/csv': { schema: str },
          },
        },
        '400': error(['invalid_request'], 'A bad range, format, limit or cursor.'),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/api/me/keys': {
    get: {
      operationId: 'listMyKeys',
      summary: "The user's API keys (never a hash or a secret)",
      tags: ['account'],
      security: account,
      responses: {
        '200': json('The keys.', object({ data: list(ref('ApiKey')) })),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
    post: {
      operationId: 'createMyKey',
      summary: 'Create an API key: the secret is in this answer only',
      tags: ['account'],
      security: account,
      parameters: [idempotencyKey],
      requestBody: body(ref('CreateApiKeyRequest'), { name: 'laptop', spendLimitUsd: '20' }),
      responses: {
        '201': json('Created.', ref('CreatedApiKey')),
        '400': error(['invalid_request', 'invalid_amount'], 'A bad name, limit or model list.'),
        '401': accountAuthErrors['401'],
        '403': error(
          ['key_restricted', 'account_suspended', 'account_erased'],
          'A restricted key cannot create keys.',
        ),
        '409': error(
          ['too_many_keys', 'user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'At most 100 active keys; the account was erased while the key was being made; or the Idempotency-Key was used for another request.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/api/me/keys/{id}': {
    delete: {
      operationId: 'revokeMyKey',
      summary: 'Revoke a key: it stops working at once',
      tags: ['account'],
      security: account,
      parameters: [pathParam('id', 'the key id')],
      responses: {
        '200': json('Revoked (or already revoked: the time it was).', revokedKey),
        '401': accountAuthErrors['401'],
        '403': error(
          ['key_restricted', 'account_suspended', 'account_erased'],
          'A restricted key, or the account is suspended or erased.',
        ),
        '404': error(['key_not_found'], 'No such key of this user.'),
        ...commonErrors,
      },
    },
  },
  '/api/me/deposit-addresses': {
    get: {
      operationId: 'listMyDepositAddresses',
      summary: "The user's deposit address on every network (one EVM address for all EVM networks)",
      tags: ['account'],
      security: account,
      responses: {
        '200': json('The addresses, assigned on first request.', list(ref('DepositAddress'))),
        ...accountAuthErrors,
        ...commonErrors,
        '503': error(
          ['service_unavailable'],
          'The database cannot be reached (then with retry-after). A network without an xpub is listed with `address: null` and `unavailable`, not a 503.',
        ),
      },
    },
  },
  '/api/me/deposit-addresses/{network}/qr.svg': {
    get: {
      operationId: 'getMyDepositAddressQr',
      summary: 'The deposit address on one network as a QR code',
      tags: ['dashboard'],
      security: account,
      parameters: [pathParam('network', 'a configured network name')],
      responses: {
        '200': {
          description: 'An SVG image of the bare address.',
          content: { 'image/svg+xml': { schema: str } },
        },
        '304': { description: 'Not modified (ETag).' },
        '400': error(['invalid_request'], 'Not a network name.'),
        ...accountAuthErrors,
        '404': error(['network_not_found'], 'No such network.'),
        ...commonErrors,
        '503': error(
          [
            'deposits_not_configured',
            'deposit_key_mismatch',
            'deposit_key_invalid',
            'service_unavailable',
          ],
          'No xpub configured for this network family, the configured xpub is not the key the last address was assigned under or does not parse, or the database cannot be reached (then with retry-after).',
        ),
      },
    },
  },
  '/api/me/deposits': {
    get: {
      operationId: 'listMyDeposits',
      summary: 'Deposits with their state, confirmations, credited USD and rate',
      tags: ['account'],
      security: account,
      parameters: [
        query('network', 'one network'),
        query('limit', 'page size', { type: 'integer' }),
        query('cursor', "the previous page's nextCursor"),
      ],
      responses: {
        '200': json('A page of deposits, newest first.', page(ref('Deposit'))),
        '400': error(['invalid_request'], 'A bad cursor.'),
        ...accountAuthErrors,
        ...commonErrors,
      },
    },
  },

  '/admin/users': {
    get: {
      operationId: 'findUsers',
      summary: 'Find users by Telegram id or username (audited)',
      tags: ['admin'],
      security: admin,
      parameters: [query('telegramId', 'exact'), query('username', 'case-insensitive')],
      responses: {
        '200': json('Matching users.', object({ data: list(ref('AdminUser')) })),
        '400': error(['invalid_request'], 'Not exactly one criterion.'),
        ...adminAuthErrors,
        ...commonErrors,
      },
    },
    post: {
      operationId: 'createUser',
      summary: 'Create a user',
      tags: ['admin'],
      security: admin,
      parameters: [idempotencyKey],
      requestBody: body(
        object({ telegramId: { type: ['integer', 'string'] }, username: str }, ['username']),
        { telegramId: 123456789, username: 'ada' },
      ),
      responses: {
        '201': json('Created.', object({ id: str })),
        '400': error(['invalid_request'], 'A bad telegramId or username.'),
        ...adminAuthErrors,
        '409': error(
          ['user_exists', 'idempotency_conflict', 'idempotency_in_progress'],
          'That Telegram id has a user; or an Idempotency-Key conflict.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}': {
    get: {
      operationId: 'getUser',
      summary: 'A user with balance and keys (audited)',
      tags: ['admin'],
      security: admin,
      parameters: [userId],
      responses: {
        '200': json('The user.', ref('AdminUserDetail')),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/keys': {
    get: {
      operationId: 'listUserKeys',
      summary: "A user's API keys, newest first (never a hash or a secret; audited)",
      tags: ['admin'],
      security: admin,
      parameters: [userId],
      responses: {
        '200': json('The keys.', object({ data: list(ref('ApiKey')) })),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        ...commonErrors,
      },
    },
    post: {
      operationId: 'createUserKey',
      summary: 'Create an API key for a user: the secret is in this answer only',
      tags: ['admin'],
      security: admin,
      parameters: [userId, idempotencyKey],
      requestBody: body(ref('CreateApiKeyRequest')),
      responses: {
        '201': json('Created.', ref('CreatedApiKey')),
        '400': error(['invalid_request', 'invalid_amount'], 'A bad name, limit or model list.'),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        '409': error(
          ['user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'An erased user (no new keys), or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/keys/{keyId}': {
    delete: {
      operationId: 'revokeUserKey',
      summary: "Revoke one of a user's API keys (audited): it stops working at once",
      tags: ['admin'],
      security: admin,
      parameters: [userId, pathParam('keyId', 'the key id')],
      responses: {
        '200': json('Revoked (or already revoked: the time it was).', revokedKey),
        ...adminAuthErrors,
        '404': error(
          ['user_not_found', 'key_not_found'],
          'No such user, or no such key of this user.',
        ),
        ...commonErrors,
      },
    },
  },
  '/admin/keys/{id}': {
    patch: {
      operationId: 'updateKey',
      summary:
        "Change an API key's spend limit or model list (audited): every process uses them at once",
      tags: ['admin'],
      security: admin,
      parameters: [pathParam('id', 'the key id')],
      requestBody: body(ref('UpdateApiKeyRequest'), { spendLimitUsd: '5' }),
      responses: {
        '200': json(
          'Changed (or already so: `changed` false, nothing written).',
          ref('UpdatedApiKey'),
        ),
        '400': error(
          ['invalid_request', 'invalid_amount'],
          'Nothing to change, an unknown field, a bad limit or model list.',
        ),
        ...adminAuthErrors,
        '404': error(['key_not_found'], 'No such key.'),
        '409': error(['key_revoked'], 'A revoked key is not changed.'),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/adjustments': {
    post: {
      operationId: 'adjustUserBalance',
      summary: 'Credit (or, negative, debit) a balance; never below zero',
      tags: ['admin'],
      security: admin,
      parameters: [userId, idempotencyKey],
      requestBody: body(object({ amount: decimal, reason: { type: 'string', minLength: 1 } }), {
        amount: '10',
        reason: 'welcome credit',
      }),
      responses: {
        '201': json('Booked.', object({ entryId: str, balance: ref('Balance') })),
        '400': error(['invalid_request', 'invalid_amount'], 'A bad amount or no reason.'),
        '402': error(
          ['insufficient_balance'],
          'A debit larger than the available balance. Type `insufficient_quota`.',
        ),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        '409': error(
          ['user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'An erased user (its balance is unclaimed, no adjustments), or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/balance': {
    get: {
      operationId: 'getUserBalance',
      summary: "A user's USD balance",
      tags: ['admin'],
      security: admin,
      parameters: [userId],
      responses: {
        '200': json('The balance.', ref('Balance')),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/suspend': {
    post: {
      operationId: 'suspendUser',
      summary: 'Suspend a user: keys and sessions answer 403 from the next request',
      tags: ['admin'],
      security: admin,
      parameters: [userId, idempotencyKey],
      requestBody: body(object({ reason: { type: 'string', minLength: 1, maxLength: 500 } })),
      responses: {
        '200': json('The user; changed is false when it already was suspended.', {
          allOf: [ref('AdminUser'), object({ changed: bool })],
        }),
        '400': error(['invalid_request'], 'No reason.'),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        '409': error(
          ['user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'An erased user, or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/users/{id}/unsuspend': {
    post: {
      operationId: 'unsuspendUser',
      summary: 'Reinstate a suspended user',
      tags: ['admin'],
      security: admin,
      parameters: [userId, idempotencyKey],
      requestBody: body(object({ reason: { type: 'string', minLength: 1, maxLength: 500 } })),
      responses: {
        '200': json('The user.', { allOf: [ref('AdminUser'), object({ changed: bool })] }),
        '400': error(['invalid_request'], 'No reason.'),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        '409': error(
          ['user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'An erased user, or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/entries': {
    post: {
      operationId: 'postManualEntry',
      summary:
        'Post a manual journal entry (kind `manual`): a custody correction, a dust deposit, a refund',
      description:
        "Balanced per currency, amounts as decimal strings in the currency's scale, accounts the chart allows (created on first use; `currency` names the currency of a new custody or fee account). Refused: postings to `revenue:usage` (it changes only with metered calls), to the customer account of an erased user, or that take a customer below zero. The description and the admin are recorded in the entry's metadata; `metadata.chain` ({network, txHash, logIndex, blockNumber}) is kept as given and read by reconciliation (a deposit booked by hand). Nothing is written when refused.",
      tags: ['admin'],
      security: admin,
      parameters: [idempotencyKey],
      requestBody: body(
        object(
          {
            description: { type: 'string', minLength: 1, maxLength: 500 },
            postings: list(
              object(
                {
                  account: { type: 'string', description: 'an account code of the chart' },
                  amount: { ...decimal, description: 'positive debits, negative credits' },
                  currency: {
                    type: 'string',
                    description: 'needed to create an account whose template leaves it open',
                  },
                },
                ['currency'],
              ),
            ),
            metadata: { type: 'object', additionalProperties: true },
            effectiveAt: time,
          },
          ['metadata', 'effectiveAt'],
        ),
        {
          description: 'dust deposit 0xabc.. log 3, below minDeposit, booked into custody',
          postings: [
            { account: 'assets:custody:ethereum:USDT:0x7099...', amount: '0.5', currency: 'USDT' },
            { account: 'equity:trading:USDT', amount: '-0.5' },
          ],
          metadata: {
            chain: { network: 'ethereum', txHash: '0xabc...', logIndex: 3, blockNumber: 19000000 },
          },
        },
      ),
      responses: {
        '201': json('Booked.', object({ entryId: str })),
        '400': error(
          [
            'invalid_request',
            'invalid_amount',
            'unbalanced_entry',
            'invalid_entry',
            'unknown_currency',
            'unknown_account',
            'invalid_account',
            'currency_mismatch',
            'account_not_allowed',
          ],
          'A bad body, an unbalanced entry, a bad amount, an unknown currency or account, or a posting to revenue:usage.',
        ),
        '402': error(
          ['insufficient_balance'],
          'The entry would take a customer account below zero. Type `insufficient_quota`.',
        ),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'A customer account of no user.'),
        '409': error(
          ['user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'A customer account of an erased user, or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/entries/{id}/reversal': {
    post: {
      operationId: 'reverseEntry',
      summary: 'Reverse an entry (a new entry of kind `manual.reversal` mirroring it)',
      description:
        "Nothing is edited; an entry is reversed at most once. Refused for a charged call (an entry posting to `revenue:usage`), for an entry of an erased user's customer account, and when the reversal would take a customer below zero.",
      tags: ['admin'],
      security: admin,
      parameters: [pathParam('id', 'the entry to reverse'), idempotencyKey],
      requestBody: body(object({ reason: { type: 'string', minLength: 1, maxLength: 500 } }), {
        reason: 'posted to the wrong custody address',
      }),
      responses: {
        '201': json('Reversed.', object({ entryId: str, reversedEntryId: str })),
        '400': error(
          ['invalid_request', 'entry_not_reversible'],
          'No reason, or an entry the service booked.',
        ),
        '402': error(
          ['insufficient_balance'],
          'The reversal would take a customer account below zero. Type `insufficient_quota`.',
        ),
        ...adminAuthErrors,
        '404': error(['entry_not_found'], 'No such entry.'),
        '409': error(
          ['already_reversed', 'user_erased', 'idempotency_conflict', 'idempotency_in_progress'],
          'Already reversed, an erased user, or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },
  '/admin/trial-balance': {
    get: {
      operationId: 'getTrialBalance',
      summary: 'Debits and credits per account and currency; every currency nets to zero',
      tags: ['admin'],
      security: admin,
      responses: {
        '200': json('The trial balance.', ref('TrialBalance')),
        ...adminAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/admin/audit-log': {
    get: {
      operationId: 'listAuditLog',
      summary: 'The append-only audit log, newest first (reading it is recorded too)',
      tags: ['admin'],
      security: admin,
      parameters: [
        query('limit', '1-1000, default 100', { type: 'integer' }),
        query('cursor', "the previous page's nextCursor"),
        query('target', 'such as user:42'),
        query('action', 'such as balance.adjust'),
        query('actor', 'admin or user:42'),
      ],
      responses: {
        '200': json('A page of entries.', page(ref('AuditEntry'))),
        '400': error(['invalid_request'], 'A bad cursor or limit.'),
        ...adminAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/admin/exports/journal': {
    get: {
      operationId: 'exportJournal',
      summary: 'The journal, streamed from one snapshot (audited)',
      tags: ['admin'],
      security: admin,
      parameters: [
        {
          ...query('format', 'the file format', {
            type: 'string',
            enum: ['csv', 'jsonl', 'hledger', 'beancount'],
          }),
          required: true,
        },
        query('from', 'inclusive start'),
        query('to', 'exclusive end'),
        query('account', 'only entries touching this account (or prefix)'),
        query('basis', 'effective (default) or booked time'),
      ],
      responses: {
        '200': {
          description: 'The journal file.',
          headers: { 'x-request-id': requestIdHeader },
          content: {
            'text/csv': { schema: str },
            'application/x-ndjson': { schema: str },
            'text/plain': { schema: { type: 'string', description: 'hledger or beancount' } },
          },
        },
        '400': error(['invalid_request'], 'A bad format or filter.'),
        ...adminAuthErrors,
        '422': error(
          [
            'account_name_collision',
            'unmappable_account',
            'unmappable_amount',
            'unmappable_currency',
          ],
          'The books cannot be written in this format as they are.',
        ),
        ...commonErrors,
      },
    },
  },
  '/admin/exports/trial-balance': {
    get: {
      operationId: 'exportTrialBalance',
      summary: 'The trial balance as CSV (audited)',
      tags: ['admin'],
      security: admin,
      parameters: [query('to', 'as of'), query('basis', 'effective or booked')],
      responses: {
        '200': file('CSV.', 'text/csv'),
        '400': error(['invalid_request'], 'A bad filter.'),
        ...adminAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/admin/exports/statement': {
    get: {
      operationId: 'exportStatement',
      summary: "A user's statement as CSV (audited)",
      tags: ['admin'],
      security: admin,
      parameters: [
        { ...query('user', 'the user id'), required: true },
        query('from', 'inclusive start'),
        query('to', 'exclusive end'),
      ],
      responses: {
        '200': file('CSV.', 'text/csv'),
        '400': error(['invalid_request'], 'No user or a bad range.'),
        ...adminAuthErrors,
        '404': error(['user_not_found'], 'No such user.'),
        ...commonErrors,
      },
    },
  },
  '/admin/exports/seals': {
    get: {
      operationId: 'exportSeals',
      summary: 'The seal chain over committed entries, as JSONL',
      tags: ['admin'],
      security: admin,
      responses: {
        '200': file('JSONL.', 'application/x-ndjson'),
        ...adminAuthErrors,
        ...commonErrors,
      },
    },
  },
  '/admin/reconciliations': {
    post: {
      operationId: 'runReconciliation',
      summary: 'Run a reconciliation now; answers when it is done',
      tags: ['admin'],
      security: admin,
      parameters: [idempotencyKey],
      requestBody: body(object({ networks: list(str) }, ['networks'])),
      responses: {
        '201': json('The run, stored.', ref('ReconciliationRun')),
        '400': error(['invalid_request', 'unknown_network'], 'A network not in the config.'),
        ...adminAuthErrors,
        '409': error(
          ['reconciliation_running', 'idempotency_conflict', 'idempotency_in_progress'],
          'Another run did not finish within `reconcile.lockWaitMs`; or Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
        '503': error(
          ['reconciliation_turn_lost', 'service_unavailable'],
          'The run lost its turn midway (its database session ended, so another run could start): nothing of it was stored; run it again. Or the database cannot be reached.',
        ),
      },
    },
  },
  '/admin/reconciliations/latest': {
    get: {
      operationId: 'getLatestReconciliation',
      summary: 'The latest reconciliation run',
      tags: ['admin'],
      security: admin,
      responses: {
        '200': json('The run.', ref('ReconciliationRun')),
        ...adminAuthErrors,
        '404': error(['no_reconciliation'], 'None has run yet.'),
        ...commonErrors,
      },
    },
  },
  '/admin/reconciliations/acknowledgements': {
    post: {
      operationId: 'acknowledgeReconciliationFinding',
      summary: 'Acknowledge a finding of the latest run',
      description:
        'A `deposit_reversed` or `unexpected_outflow` finding an operator has decided on, by its fingerprint: later runs leave it out (counted in `stats.acknowledged`). Recorded with the reason and in the audit log (`reconciliation.acknowledge`).',
      tags: ['admin'],
      security: admin,
      parameters: [idempotencyKey],
      requestBody: body(object({ fingerprint: str, reason: str })),
      responses: {
        '201': json('Acknowledged.', object({ fingerprint: str, runId: str, finding })),
        '400': error(
          ['invalid_request', 'finding_not_acknowledgeable'],
          'No fingerprint or reason, or a kind that goes away only when put right.',
        ),
        ...adminAuthErrors,
        '404': error(['finding_not_found'], 'The latest run has no such finding.'),
        '409': error(
          ['already_acknowledged', 'idempotency_conflict', 'idempotency_in_progress'],
          'Acknowledged before; Idempotency-Key.',
        ),
        ...bodyTooLarge,
        ...commonErrors,
      },
    },
  },

  '/': {
    get: {
      operationId: 'dashboard',
      summary: 'The user dashboard (HTML; its scripts and styles are served beside it)',
      tags: ['dashboard'],
      responses: {
        '200': { description: 'The page.', content: { 'text/html': { schema: str } } },
        '304': { description: 'Not modified (ETag).' },
      },
    },
  },
};

/** The document served at GET /openapi.json. */
export const openApiDocument: OpenApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'Lingxi Ledger',
    version: '1.0.0',
    description:
      'Prepaid USD balances funded by crypto, spent through an OpenAI-compatible API. Amounts are decimal strings. Every response carries `x-request-id`. Every error has the shape `{"error": {"message", "type", "code", "param"}}`. See docs/api.md and docs/api-account.md.',
  },
  tags: [
    { name: 'gateway', description: 'OpenAI-compatible API: Authorization: Bearer <API key>' },
    { name: 'account', description: "The signed-in user's own account: API key or session" },
    { name: 'admin', description: 'The operator API: Authorization: Bearer <adminToken>' },
    { name: 'dashboard', description: 'The user dashboard and what it loads' },
    { name: 'operations', description: 'Health, readiness, metrics, this document' },
  ],
  paths,
  components: {
    schemas,
    responses: {
      InternalError: {
        description:
          'An unexpected error: code `internal_error`, type `api_error`; the x-request-id finds it in the logs.',
        headers: { 'x-request-id': requestIdHeader },
        content: { 'application/json': { schema: ref('Error') } },
      },
      ServiceUnavailable: retryLater(
        'The service cannot reach its database (a failover, a blip): code `service_unavailable`, type `api_error`.',
      ),
      RequestTooLarge: {
        description:
          'The body is larger than http.bodyLimitBytes: code `request_too_large`, type `invalid_request_error`; nothing was read or changed.',
        headers: { 'x-request-id': requestIdHeader },
        content: { 'application/json': { schema: ref('Error') } },
      },
      RateLimited: retryLater(
        'Too many requests or tokens per minute for this key: code `rate_limit_exceeded`, type `requests`.',
      ),
    },
    parameters: {
      IdempotencyKey: {
        name: 'Idempotency-Key',
        in: 'header',
        description:
          'At most 200 characters. A repeat with the same body gets the first answer again (header `idempotent-replayed: true`; a key secret is not repeated) and changes nothing.',
        schema: { type: 'string', maxLength: 200 },
      },
    },
    headers: {
      XRequestId: {
        description: 'The request id (yours if you sent a sane x-request-id); in every log line',
        schema: str,
      },
      XLingxiCost: {
        description: 'The USD charged for this call, exactly (a decimal string); "0" on failure',
        schema: decimal,
      },
    },
    securitySchemes: {
      ApiKey: { type: 'http', scheme: 'bearer', description: 'An API key: lx-...' },
      SessionToken: {
        type: 'http',
        scheme: 'bearer',
        description: 'A session token from a sign-in: lxs-...',
      },
      AdminToken: { type: 'http', scheme: 'bearer', description: 'The configured adminToken' },
    },
  },
};
