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
  options: { token?: string; body?: unknown } = {},
): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${service.url}${path}`, {
    method: method.toUpperCase(),
    headers: {
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
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
