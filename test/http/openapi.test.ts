import type Router from '@koa/router';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { z } from 'zod';
import { dashboardStaticDir, loadStaticFiles } from '../../src/http/dashboard/staticFiles.js';
import { createHttpApp } from '../../src/http/app.js';
import {
  openApiDocument,
  type HttpMethod,
  type JsonSchema,
  type OperationObject,
  type ResponseObject,
} from '../../src/http/openapi.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import {
  ADMIN_TOKEN,
  startTestService,
  userWithKey,
  type TestService,
} from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';
import { gatewayConfig } from '../gateway/fixtures.js';

/**
 * GET /openapi.json describes exactly the routes the app serves, and real answers of the
 * service match the schemas it documents for them.
 */

let database: TestDatabase;
let stub: UpstreamStub;
let service: TestService;

beforeAll(async () => {
  [database, stub] = await Promise.all([
    createTestDatabase(),
    startUpstreamStub({ apiKey: 'upstream-secret' }),
  ]);
  service = await startTestService({
    databaseUrl: database.url,
    config: gatewayConfig(stub.url, { telegram: { devSignIn: true } }),
  });
});
afterAll(async () => {
  await service?.stop();
  await stub?.close();
  await database?.drop();
});

const METHODS = ['get', 'post', 'patch', 'delete'] as const satisfies readonly HttpMethod[];

/** "GET /admin/users/{id}" for every route the Koa routers serve (HEAD rides along with GET). */
function servedRoutes(): Set<string> {
  const app = createHttpApp(service.http.services);
  // The dashboard's scripts, styles and icons are files, not API: the page itself is documented.
  const assets = new Set(
    [...loadStaticFiles(dashboardStaticDir()).keys()]
      .filter((name) => name !== 'index.html')
      .map((name) => `/${name}`),
  );
  const routes = new Set<string>();
  for (const middleware of app.middleware) {
    const router = (middleware as unknown as { router?: Router }).router;
    if (!router) continue;
    for (const layer of router.stack) {
      if (typeof layer.path !== 'string') throw new Error(`a route by RegExp: ${layer.path}`);
      if (assets.has(layer.path)) continue;
      for (const method of layer.methods) {
        if (method === 'HEAD') continue;
        routes.add(`${method} ${layer.path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
      }
    }
  }
  return routes;
}

function documentedRoutes(): Set<string> {
  const routes = new Set<string>();
  for (const [path, item] of Object.entries(openApiDocument.paths))
    for (const method of METHODS) if (item[method]) routes.add(`${method.toUpperCase()} ${path}`);
  return routes;
}

test('every served route is documented, and every documented route is served', () => {
  const served = servedRoutes();
  const documented = documentedRoutes();
  const undocumented = [...served].filter((route) => !documented.has(route)).sort();
  const notServed = [...documented].filter((route) => !served.has(route)).sort();
  expect({ undocumented, notServed }).toEqual({ undocumented: [], notServed: [] });
  expect(served.size).toBeGreaterThan(40);
});

test('the document is well formed: unique operation ids, resolvable refs, path parameters declared', () => {
  const doc = openApiDocument;
  expect(doc.openapi).toBe('3.1.0');
  const ids = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const operation = item[method];
      if (!operation) continue;
      expect(ids.has(operation.operationId), operation.operationId).toBe(false);
      ids.add(operation.operationId);
      expect(Object.keys(operation.responses).length).toBeGreaterThan(0);
      const declared = (operation.parameters ?? [])
        .map((p) => ('$ref' in p ? null : p))
        .filter((p) => p?.in === 'path')
        .map((p) => p!.name);
      const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      expect(declared.sort(), `${method} ${path}`).toEqual(inPath.sort());
    }
  }
  const text = JSON.stringify(doc);
  for (const [, target] of text.matchAll(/"\$ref":"#\/([^"]+)"/g)) {
    let node: unknown = doc;
    for (const part of target!.split('/')) node = (node as Record<string, unknown>)?.[part];
    expect(node, `#/${target}`).toBeDefined();
  }
  // Every error answer uses the one error shape (health probes answer their own).
  for (const item of Object.values(doc.paths))
    for (const method of METHODS) {
      if (item[method]?.tags.includes('operations')) continue;
      for (const [status, response] of Object.entries(item[method]?.responses ?? {}))
        if (Number(status) >= 400 && !('$ref' in response))
          expect(response.content?.['application/json']?.schema).toEqual({
            $ref: '#/components/schemas/Error',
          });
    }
});

test('GET /openapi.json serves the document', async () => {
  const response = await fetch(`${service.url}/openapi.json`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^application\/json/);
  expect(response.headers.get('x-request-id')).toMatch(/^req_/);
  expect(await response.json()).toEqual(JSON.parse(JSON.stringify(openApiDocument)));
});

/** Inlines `#/components/...` references (the document has no recursive schemas). */
function deref(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(deref);
  if (typeof node !== 'object' || node === null) return node;
  const record = node as Record<string, unknown>;
  if (typeof record['$ref'] === 'string') {
    let target: unknown = openApiDocument;
    for (const part of (record['$ref'] as string).slice(2).split('/'))
      target = (target as Record<string, unknown>)[part];
    return deref(target);
  }
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, deref(value)]));
}

function operationFor(method: HttpMethod, path: string): { template: string; op: OperationObject } {
  for (const [template, item] of Object.entries(openApiDocument.paths)) {
    const pattern = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    if (pattern.test(path) && item[method]) return { template, op: item[method]! };
  }
  throw new Error(`${method.toUpperCase()} ${path} is not documented`);
}

/** Calls the service and checks the answer against what the document says of it. */
async function documentedCall(
  method: HttpMethod,
  path: string,
  options: {
    token?: string | undefined;
    body?: unknown;
    rawBody?: string;
    headers?: Record<string, string>;
  } = {},
): Promise<{ status: number; body: unknown }> {
  const sent =
    options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  const response = await fetch(`${service.url}${path}`, {
    method: method.toUpperCase(),
    headers: {
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(sent === undefined ? {} : { 'content-type': 'application/json' }),
      ...options.headers,
    },
    ...(sent === undefined ? {} : { body: sent }),
  });
  const body: unknown = await response.json();
  const { template, op } = operationFor(method, path.split('?')[0]!);
  const documented = op.responses[String(response.status)];
  expect(documented, `${method} ${template} answered ${response.status}`).toBeDefined();
  const resolved = deref(documented) as ResponseObject;
  const schema = resolved.content?.['application/json']?.schema;
  expect(schema, `${method} ${template} ${response.status} has a JSON schema`).toBeDefined();
  const result = z.fromJSONSchema(schema as JsonSchema as never).safeParse(body);
  expect(
    result.success,
    `${method.toUpperCase()} ${template} ${response.status}: ${JSON.stringify(body)} ${result.error?.message ?? ''}`,
  ).toBe(true);
  const code = (body as { error?: { code?: string } }).error?.code;
  if (response.status >= 400 && code)
    expect(resolved.description, `${template} ${response.status} lists ${code}`).toContain(
      `\`${code}\``,
    );
  return { status: response.status, body };
}

test('real answers match the documented schemas and error codes', async () => {
  const { userId, apiKey, keyId } = await userWithKey(service, {
    telegramId: 9001,
    balance: '5',
  });
  await documentedCall('get', '/livez');
  await documentedCall('get', '/readyz');
  await documentedCall('get', '/healthz');
  await documentedCall('get', '/api/config');

  await documentedCall('get', '/v1/models', { token: apiKey });
  await documentedCall('get', '/v1/models');
  const chat = await documentedCall('post', '/v1/chat/completions', {
    token: apiKey,
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi [[tokens=3]]' }] },
  });
  expect(chat.status).toBe(200);
  await documentedCall('post', '/v1/embeddings', {
    token: apiKey,
    body: { model: 'text-embedding-3-small', input: 'hi' },
  });
  await documentedCall('post', '/v1/chat/completions', {
    token: apiKey,
    body: { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] },
  });
  await documentedCall('post', '/v1/chat/completions', {
    token: apiKey,
    body: { model: 'gpt-4o-mini', messages: [] },
  });
  await documentedCall('post', '/v1/chat/completions', {
    token: apiKey,
    body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x [[fail=500]]' }] },
  });

  await documentedCall('get', '/api/me', { token: apiKey });
  await documentedCall('get', '/api/me');
  await documentedCall('get', '/api/me/balance', { token: apiKey });
  await documentedCall('get', '/api/me/usage?limit=5', { token: apiKey });
  await documentedCall('get', '/api/me/statement', { token: apiKey });
  await documentedCall('get', '/api/me/keys', { token: apiKey });
  const created = await documentedCall('post', '/api/me/keys', {
    token: apiKey,
    body: { name: 'second' },
  });
  await documentedCall('delete', `/api/me/keys/${(created.body as { id: string }).id}`, {
    token: apiKey,
  });
  await documentedCall('get', '/api/me/deposits', { token: apiKey });
  await documentedCall('post', '/api/auth/logout', { token: apiKey });
  const session = await documentedCall('post', '/api/auth/dev', {
    body: { telegramId: 9002 },
  });
  await documentedCall('post', '/api/auth/logout', {
    token: (session.body as { token: string }).token,
  });

  await documentedCall('post', '/admin/users', { token: ADMIN_TOKEN, body: { telegramId: 9003 } });
  await documentedCall('post', '/admin/users', { token: ADMIN_TOKEN, body: { telegramId: 9003 } });
  await documentedCall('post', '/admin/users', { token: 'wrong', body: { telegramId: 9004 } });
  await documentedCall('get', `/admin/users/${userId}`, { token: ADMIN_TOKEN });
  await documentedCall('get', '/admin/users/999999', { token: ADMIN_TOKEN });
  await documentedCall('get', '/admin/users?telegramId=9001', { token: ADMIN_TOKEN });
  await documentedCall('get', `/admin/users/${userId}/balance`, { token: ADMIN_TOKEN });
  await documentedCall('post', `/admin/users/${userId}/adjustments`, {
    token: ADMIN_TOKEN,
    body: { amount: '1.5', reason: 'goodwill' },
  });
  await documentedCall('post', `/admin/users/${userId}/adjustments`, {
    token: ADMIN_TOKEN,
    body: { amount: '-1000', reason: 'too much' },
  });
  await documentedCall('post', `/admin/users/${userId}/keys`, {
    token: ADMIN_TOKEN,
    body: { name: 'ops' },
  });
  // A bad spend limit, both ways a key is created: its error code is the documented one.
  expect(
    (
      await documentedCall('post', `/admin/users/${userId}/keys`, {
        token: ADMIN_TOKEN,
        body: { name: 'ops', spendLimitUsd: '-1' },
      })
    ).status,
  ).toBe(400);
  expect(
    (
      await documentedCall('post', '/api/me/keys', {
        token: apiKey,
        body: { name: 'limited', spendLimitUsd: '1e3' },
      })
    ).status,
  ).toBe(400);
  await documentedCall('post', `/admin/users/${userId}/suspend`, {
    token: ADMIN_TOKEN,
    body: { reason: 'test' },
  });
  await documentedCall('get', '/v1/models', { token: apiKey });
  await documentedCall('post', `/admin/users/${userId}/unsuspend`, {
    token: ADMIN_TOKEN,
    body: { reason: 'test over' },
  });
  await documentedCall('get', '/admin/trial-balance', { token: ADMIN_TOKEN });
  await documentedCall('get', '/admin/audit-log?limit=5', { token: ADMIN_TOKEN });
  await documentedCall('get', '/admin/reconciliations/latest', { token: ADMIN_TOKEN });
  await documentedCall('post', '/admin/reconciliations', { token: ADMIN_TOKEN, body: {} });
  await documentedCall('get', '/admin/reconciliations/latest', { token: ADMIN_TOKEN });
  const ack = (body: unknown) =>
    documentedCall('post', '/admin/reconciliations/acknowledgements', { token: ADMIN_TOKEN, body });
  expect((await ack({ fingerprint: '0123456789abcdef', reason: 'seen' })).status).toBe(404);
  expect((await ack({ fingerprint: '0123456789abcdef' })).status).toBe(400);
  expect((await ack({ fingerprint: '0123456789abcdef', reason: '  ' })).status).toBe(400);
  const patchKey = (id: string, body: unknown) =>
    documentedCall('patch', `/admin/keys/${id}`, { token: ADMIN_TOKEN, body });
  expect((await patchKey(keyId, { spendLimitUsd: '3', allowedModels: null })).status).toBe(200);
  expect((await patchKey(keyId, { spendLimitUsd: '3.00' })).status).toBe(200);
  expect((await patchKey(keyId, {})).status).toBe(400);
  expect((await patchKey(keyId, { spendLimitUsd: '-1' })).status).toBe(400);
  expect(
    (await patchKey('0190b6c0-0000-7000-8000-000000000000', { allowedModels: null })).status,
  ).toBe(404);
  expect(keyId).toBeTruthy();
}, 60_000);

/** A request the service must refuse: the status and code it answers with. */
interface Refusal {
  what: string;
  method: HttpMethod;
  path: string;
  status: number;
  code: string;
  token?: string | undefined;
  body?: unknown;
  rawBody?: string;
  headers?: Record<string, string>;
}

/** `refuse('bad limit', 'POST /api/me/keys', '400 invalid_amount', {token, body})`. */
function refuse(
  what: string,
  route: string,
  answer: string,
  options: Pick<Refusal, 'token' | 'body' | 'rawBody' | 'headers'>,
): Refusal {
  const [method, path] = route.split(' ') as [string, string];
  const [status, code] = answer.split(' ') as [string, string];
  return {
    what: `${route}: ${what}`,
    method: method.toLowerCase() as HttpMethod,
    path,
    status: Number(status),
    code,
    ...options,
  };
}

/**
 * Sends each refusal through documentedCall (the status must be documented for the route, the
 * code listed in that answer's description) and checks it was refused as expected; collects
 * every mismatch, so one run names all the drift.
 */
async function refusalsNotDocumented(refusals: Refusal[]): Promise<string[]> {
  const problems: string[] = [];
  for (const { what, method, path, status, code, ...options } of refusals) {
    try {
      const answer = await documentedCall(method, path, options);
      const answered = (answer.body as { error?: { code?: string } }).error?.code;
      if (answer.status !== status || answered !== code)
        problems.push(`${what}: answered ${answer.status} ${answered}, not ${status} ${code}`);
    } catch (error) {
      problems.push(`${what}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  return problems;
}

async function signIn(telegramId: number): Promise<{ token: string; userId: string }> {
  const response = await fetch(`${service.url}/api/auth/dev`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ telegramId }),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { token: string; userId: string };
}

test('the key and account routes refuse bad requests with codes the document lists for them', async () => {
  const { userId, apiKey, keyId } = await userWithKey(service, { telegramId: 9101, balance: '5' });
  const restricted = await userWithKey(service, {
    telegramId: 9102,
    key: { name: 'limited', spendLimitUsd: '1' },
  });
  const other = await userWithKey(service, { telegramId: 9103 });
  const { token: session } = await signIn(9104);
  const erased = await userWithKey(service, { telegramId: 9105 });
  const erase = { confirm: 'erase my account' };
  const erasure = await documentedCall('delete', '/api/me', { token: erased.apiKey, body: erase });
  expect(erasure.status).toBe(200);
  const revoked = await documentedCall('post', `/admin/users/${userId}/keys`, {
    token: ADMIN_TOKEN,
    body: { name: 'to revoke' },
  });
  const revokedId = (revoked.body as { id: string }).id;
  expect(
    (
      await documentedCall('delete', `/admin/users/${userId}/keys/${revokedId}`, {
        token: ADMIN_TOKEN,
      })
    ).status,
  ).toBe(200);
  const conflicting = { 'idempotency-key': 'openapi-refusals-1' };
  expect(
    (
      await documentedCall('post', '/api/me/keys', {
        token: session,
        body: { name: 'first' },
        headers: conflicting,
      })
    ).status,
  ).toBe(201);
  const noKey = '0190b6c0-0000-7000-8000-000000000000';
  const unknownKey = `lx-${'A'.repeat(43)}`;
  const unknownSession = `lxs-${'A'.repeat(43)}`;
  const revokedSecret = (revoked.body as { key: string }).key;
  const adm = (body?: unknown) => ({ token: ADMIN_TOKEN, ...(body === undefined ? {} : { body }) });
  const me = (body?: unknown) => ({ token: session, ...(body === undefined ? {} : { body }) });

  const u = `/admin/users/${userId}`;
  const patch = `PATCH /admin/keys/${keyId}`;
  const refusals: Refusal[] = [
    // POST /admin/users/:id/keys
    refuse('name not text', `POST ${u}/keys`, '400 invalid_request', adm({ name: 5 })),
    refuse('negative limit', `POST ${u}/keys`, '400 invalid_amount', adm({ spendLimitUsd: '-1' })),
    refuse('limit a number', `POST ${u}/keys`, '400 invalid_amount', adm({ spendLimitUsd: 5 })),
    refuse('models a text', `POST ${u}/keys`, '400 invalid_request', adm({ allowedModels: 'a' })),
    refuse('body a list', `POST ${u}/keys`, '400 invalid_request', adm([])),
    refuse('no such user', 'POST /admin/users/999999/keys', '404 user_not_found', adm({})),
    refuse('not a user id', 'POST /admin/users/abc/keys', '404 user_not_found', adm({})),
    refuse('erased', `POST /admin/users/${erased.userId}/keys`, '409 user_erased', adm({})),
    refuse('wrong token', `POST ${u}/keys`, '401 invalid_admin_token', {
      token: 'wrong',
      body: {},
    }),
    // GET /admin/users/:id/keys, DELETE /admin/users/:id/keys/:keyId
    refuse('no such user', 'GET /admin/users/999999/keys', '404 user_not_found', adm()),
    refuse('no such user', `DELETE /admin/users/999999/keys/${keyId}`, '404 user_not_found', adm()),
    refuse('not a key id', `DELETE ${u}/keys/nope`, '404 key_not_found', adm()),
    refuse('not his key', `DELETE ${u}/keys/${other.keyId}`, '404 key_not_found', adm()),
    // PATCH /admin/keys/:id
    refuse('nothing to change', patch, '400 invalid_request', adm({})),
    refuse('unknown field', patch, '400 invalid_request', adm({ name: 'x' })),
    refuse('limit a word', patch, '400 invalid_amount', adm({ spendLimitUsd: 'ten' })),
    refuse('zero limit', patch, '400 invalid_amount', adm({ spendLimitUsd: '0' })),
    refuse('models not ids', patch, '400 invalid_request', adm({ allowedModels: [1] })),
    refuse('body a list', patch, '400 invalid_request', adm([])),
    refuse(
      'no such key',
      `PATCH /admin/keys/${noKey}`,
      '404 key_not_found',
      adm({ allowedModels: null }),
    ),
    refuse(
      'not a key id',
      'PATCH /admin/keys/nope',
      '404 key_not_found',
      adm({ allowedModels: null }),
    ),
    refuse(
      'revoked',
      `PATCH /admin/keys/${revokedId}`,
      '409 key_revoked',
      adm({ allowedModels: null }),
    ),
    // POST /api/me/keys, DELETE /api/me/keys/:id, GET /api/me/keys
    refuse('long name', 'POST /api/me/keys', '400 invalid_request', me({ name: 'x'.repeat(101) })),
    refuse('bad limit', 'POST /api/me/keys', '400 invalid_amount', me({ spendLimitUsd: '1e3' })),
    refuse('restricted', 'POST /api/me/keys', '403 key_restricted', {
      token: restricted.apiKey,
      body: {},
    }),
    refuse('Idempotency-Key reused', 'POST /api/me/keys', '409 idempotency_conflict', {
      ...me({ name: 'second' }),
      headers: conflicting,
    }),
    refuse('erased', 'POST /api/me/keys', '403 account_erased', { token: erased.apiKey, body: {} }),
    refuse('unknown key', 'POST /api/me/keys', '401 invalid_api_key', {
      token: unknownKey,
      body: {},
    }),
    refuse('not a key id', 'DELETE /api/me/keys/nope', '404 key_not_found', me()),
    refuse('not his key', `DELETE /api/me/keys/${keyId}`, '404 key_not_found', me()),
    refuse('restricted', `DELETE /api/me/keys/${restricted.keyId}`, '403 key_restricted', {
      token: restricted.apiKey,
    }),
    refuse('no credentials', 'GET /api/me/keys', '401 missing_credentials', {}),
    refuse('revoked key', 'GET /api/me/keys', '401 invalid_api_key', { token: revokedSecret }),
    // Other admin reads
    refuse('no criterion', 'GET /admin/users', '400 invalid_request', adm()),
    refuse(
      'two criteria',
      'GET /admin/users?telegramId=1&username=a',
      '400 invalid_request',
      adm(),
    ),
    refuse('bad limit', 'GET /admin/audit-log?limit=0', '400 invalid_request', adm()),
    refuse('bad cursor', 'GET /admin/audit-log?cursor=nope', '400 invalid_request', adm()),
    refuse('no format', 'GET /admin/exports/journal', '400 invalid_request', adm()),
    refuse(
      'bad basis',
      'GET /admin/exports/journal?format=csv&basis=x',
      '400 invalid_request',
      adm(),
    ),
    refuse(
      'bad range',
      'GET /admin/exports/journal?format=csv&from=x',
      '400 invalid_request',
      adm(),
    ),
    refuse('bad basis', 'GET /admin/exports/trial-balance?basis=x', '400 invalid_request', adm()),
    refuse('no user', 'GET /admin/exports/statement', '400 invalid_request', adm()),
    refuse('no such user', 'GET /admin/exports/statement?user=999999', '404 user_not_found', adm()),
    // /api/me
    refuse('not confirmed', 'DELETE /api/me', '400 confirmation_required', me({ confirm: 'yes' })),
    refuse('body a list', 'DELETE /api/me', '400 confirmation_required', me([])),
    refuse('body not JSON', 'DELETE /api/me', '400 invalid_request', {
      token: session,
      rawBody: '{',
    }),
    refuse('restricted', 'DELETE /api/me', '403 key_restricted', {
      token: restricted.apiKey,
      body: erase,
    }),
    refuse('retried with its key', 'DELETE /api/me', '403 account_erased', {
      token: erased.apiKey,
      body: erase,
    }),
    refuse('malformed', 'GET /api/me', '401 invalid_credentials', {
      headers: { authorization: 'Basic x' },
    }),
    refuse('unknown session', 'GET /api/me/balance', '401 invalid_session', {
      token: unknownSession,
    }),
    refuse('bad limit', 'GET /api/me/usage?limit=0', '400 invalid_request', me()),
    refuse('bad cursor', 'GET /api/me/usage?cursor=nope', '400 invalid_request', me()),
    refuse('bad range', 'GET /api/me/usage?from=yesterday', '400 invalid_request', me()),
    refuse('bad format', 'GET /api/me/statement?format=xml', '400 invalid_request', me()),
    refuse('bad cursor', 'GET /api/me/statement?cursor=nope', '400 invalid_request', me()),
    refuse('bad limit', 'GET /api/me/statement?limit=99999', '400 invalid_request', me()),
    refuse('bad cursor', 'GET /api/me/deposits?cursor=nope', '400 invalid_request', me()),
    refuse('bad limit', 'GET /api/me/deposits?limit=-1', '400 invalid_request', me()),
    refuse(
      'no such network',
      'GET /api/me/deposit-addresses/mars/qr.svg',
      '404 network_not_found',
      me(),
    ),
    refuse('an API key', 'POST /api/auth/logout', '400 not_a_session', { token: apiKey }),
  ];
  expect(await refusalsNotDocumented(refusals)).toEqual([]);
}, 60_000);

/** The credential a route's security asks for; none for the routes without one. */
function credentialFor(op: OperationObject, tokens: { apiKey: string; session: string }) {
  const schemes = (op.security ?? []).flatMap((entry) => Object.keys(entry));
  if (schemes.includes('AdminToken')) return ADMIN_TOKEN;
  if (schemes.includes('SessionToken')) return tokens.session;
  if (schemes.includes('ApiKey')) return tokens.apiKey;
  return undefined;
}

test('every route that reads a body or an Idempotency-Key lists what a bad one answers', async () => {
  const { apiKey } = await userWithKey(service, { telegramId: 9201, balance: '5' });
  const { token: session } = await signIn(9202);
  const limit = service.runtime.config.http.bodyLimitBytes;
  const refusals: Refusal[] = [];
  for (const [template, item] of Object.entries(openApiDocument.paths))
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      // The refusals come before any parameter is looked at: any value will do.
      const path = template.replace(/\{[^}]+\}/g, '1');
      const token = credentialFor(op, { apiKey, session });
      const route = `${method.toUpperCase()} ${path}`;
      if (op.requestBody)
        refusals.push(
          refuse('not JSON', route, '400 invalid_request', { token, rawBody: '{' }),
          refuse('too large', route, '413 request_too_large', {
            token,
            rawBody: `"${'x'.repeat(limit)}"`,
          }),
        );
      if ((op.parameters ?? []).some((p) => '$ref' in p && p.$ref.endsWith('/IdempotencyKey')))
        refusals.push(
          refuse('Idempotency-Key too long', route, '400 invalid_request', {
            token,
            body: {},
            headers: { 'idempotency-key': 'k'.repeat(201) },
          }),
        );
    }
  expect(refusals.length).toBeGreaterThan(30);
  expect(await refusalsNotDocumented(refusals)).toEqual([]);
}, 120_000);
