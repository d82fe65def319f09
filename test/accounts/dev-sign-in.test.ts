import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { messages, startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { startTestService, type TestService } from '../support/service.js';
import { call, devSignIn, nowS, rowCounts, signTelegram, type ErrorShape } from './support.js';

let database: TestDatabase;
let service: TestService;
let dir: string;
const processes: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { telegram: { devSignIn: true } },
  });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-dev-sign-in-'));
});
afterAll(async () => {
  for (const p of processes) p.child.kill('SIGTERM');
  await Promise.all(processes.map((p) => p.exited));
  await service?.stop();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const DEV_SIGN_IN_WARNING = 'telegram.devSignIn is on';

/** `lingxi serve` as an operator runs it: with this config file, or with none (`null`). */
async function serve(
  config: Record<string, unknown> | null,
): Promise<LingxiProcess & { url: string }> {
  const cwd = mkdtempSync(join(dir, 'cwd-'));
  let args = ['serve', '--port', '0'];
  if (config) {
    const file = join(cwd, 'service.json');
    writeFileSync(
      file,
      JSON.stringify({ http: { host: '127.0.0.1' }, database: { url: database.url }, ...config }),
    );
    args = [...args, '--config', file];
  }
  // No file: DATABASE_URL is how the embedded defaults reach the test database.
  const started = startLingxi(
    args,
    { DATABASE_URL: database.url, LINGXI_CONFIG: '' },
    undefined,
    cwd,
  );
  processes.push(started);
  return Object.assign(started, { url: await started.url() });
}

test('a service started with a config file that does not turn it on has no development sign-in, even for a client on this machine', async () => {
  // What a local reverse proxy without a forwarding header (nginx `proxy_pass
  // http://127.0.0.1:8080;`) or an SSH tunnel delivers: a loopback peer, a loopback Host, no
  // Origin, no X-Forwarded-For. Such a request must not sign anyone in.
  const apiOnly = await serve({ adminToken: 'api-only-admin-token-0123456789' });
  const before = await rowCounts(database.pool);
  const port = new URL(apiOnly.url).port;
  for (const headers of [{}, { host: `127.0.0.1:${port}` }, { host: `localhost:${port}` }]) {
    const result = await devSignInAs(apiOnly, headers, 860_001);
    expect(result.status, JSON.stringify(headers)).toBe(404);
    expect(result.body.error.code).toBe('not_found');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
  const config = await call<{ devSignIn: boolean }>(apiOnly, 'GET', '/api/config');
  expect(config.body.devSignIn).toBe(false);
  expect(messages(apiOnly.log).filter((m) => m.includes(DEV_SIGN_IN_WARNING))).toEqual([]);
});

test('a config file with "devSignIn": true signs in loopback clients, still never through a proxy; so does a service with no config file', async () => {
  const [optedIn, noFile] = await Promise.all([
    serve({ telegram: { devSignIn: true } }),
    serve(null),
  ]);
  for (const target of [optedIn, noFile]) {
    expect(messages(target.log).some((m) => m.includes(DEV_SIGN_IN_WARNING))).toBe(true);
    const config = await call<{ devSignIn: boolean }>(target, 'GET', '/api/config');
    expect(config.body.devSignIn).toBe(true);
    const before = await rowCounts(database.pool);
    const proxied = await call<ErrorShape>(target, 'POST', '/api/auth/dev', {
      body: { telegramId: 860_101 },
      headers: { 'x-forwarded-for': '203.0.113.9' },
    });
    expect(proxied.status).toBe(403);
    expect(proxied.body.error.code).toBe('dev_sign_in_local_only');
    expect(await rowCounts(database.pool)).toEqual(before);
  }
  expect((await devSignIn(optedIn, 860_101)).token).toMatch(/^lxs-/);
  expect((await devSignIn(noFile, 860_102)).token).toMatch(/^lxs-/);
});

test('without a bot token Telegram sign-in answers 503 telegram_not_configured', async () => {
  const before = await rowCounts(database.pool);
  const result = await call<ErrorShape>(service, 'POST', '/api/auth/telegram', {
    body: signTelegram({ id: 1, auth_date: nowS() }),
  });
  expect(result.status).toBe(503);
  expect(result.body.error.code).toBe('telegram_not_configured');
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('the development sign-in creates a user and a session', async () => {
  const session = await devSignIn(service, 4242, 'dev_user');
  expect(session.token).toMatch(/^lxs-/);
  const me = await call<{ telegramId: string; username: string }>(service, 'GET', '/api/me', {
    token: session.token,
  });
  expect(me.body).toMatchObject({ telegramId: '4242', username: 'dev_user' });
  const again = await devSignIn(service, 4242);
  expect(again.userId).toBe(session.userId);
  const { rows } = await database.pool.query(`select method from sessions where user_id = $1`, [
    session.userId,
  ]);
  expect(rows.map((r) => r.method)).toEqual(['dev', 'dev']);
});

test('the development sign-in validates its input', async () => {
  const before = await rowCounts(database.pool);
  for (const body of [
    { telegramId: '1; drop table users; --' },
    { telegramId: -5 },
    { telegramId: 5, username: "'; drop table users; --" },
    [1],
  ]) {
    const result = await call<ErrorShape>(service, 'POST', '/api/auth/dev', { body });
    expect(result.status).toBe(400);
    expect(result.body.error.type).toBe('invalid_request_error');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('a request that came through a proxy never gets a development session, whatever it says its address is', async () => {
  // Behind a proxy with http.trustProxy, `ctx.ip` is whatever X-Forwarded-For says, which
  // any client writes; and a proxy on this machine makes every client's socket loopback.
  const proxied = await startTestService({
    databaseUrl: database.url,
    config: { http: { trustProxy: true }, telegram: { devSignIn: true } },
  });
  try {
    const before = await rowCounts(database.pool);
    for (const target of [proxied, service]) {
      for (const headers of [
        { 'x-forwarded-for': '127.0.0.1' },
        { 'x-forwarded-for': '203.0.113.9, 127.0.0.1' },
        { forwarded: 'for=127.0.0.1' },
        { 'x-real-ip': '203.0.113.9' },
      ]) {
        const result = await call<ErrorShape>(target, 'POST', '/api/auth/dev', {
          body: { telegramId: 777_001 },
          headers,
        });
        expect(result.status).toBe(403);
        expect(result.body.error.code).toBe('dev_sign_in_local_only');
      }
    }
    expect(await rowCounts(database.pool)).toEqual(before);
    // A client on this machine, direct, still signs in.
    expect((await devSignIn(proxied, 777_001)).token).toMatch(/^lxs-/);
  } finally {
    await proxied.stop();
  }
});

/** POST /api/auth/dev with the Host header a browser would send (fetch cannot set Host). */
function devSignInAs(
  target: { url: string },
  headers: Record<string, string>,
  telegramId: number,
): Promise<{ status: number; body: ErrorShape & { token?: string } }> {
  const url = new URL('/api/auth/dev', target.url);
  const payload = JSON.stringify({ telegramId });
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(payload)),
          ...headers,
        },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }),
        );
      },
    );
    request.on('error', reject);
    request.end(payload);
  });
}

test('a web page cannot reach the development sign-in through the browser of someone on this machine (DNS rebinding, cross-site POST)', async () => {
  const port = new URL(service.url).port;
  const before = await rowCounts(database.pool);
  for (const headers of [
    // evil.example resolved to 127.0.0.1 for a moment: the browser calls us as evil.example.
    { host: `evil.example:${port}`, origin: `http://evil.example:${port}` },
    { host: `evil.example:${port}` },
    { host: `127.0.0.1.evil.example:${port}` },
    // A page elsewhere posting to us (text/plain needs no preflight).
    { host: `127.0.0.1:${port}`, origin: 'https://evil.example' },
    { host: `127.0.0.1:${port}`, origin: 'null' },
    { host: `localhost:${port}`, origin: `http://localhost.evil.example:${port}` },
  ]) {
    const result = await devSignInAs(service, headers, 840_101);
    expect(result.status, JSON.stringify(headers)).toBe(403);
    expect(result.body.error.code).toBe('dev_sign_in_local_only');
  }
  expect(await rowCounts(database.pool)).toEqual(before);
  // The dashboard itself, opened on this machine by any loopback name, still signs in.
  for (const [index, name] of ['127.0.0.1', 'localhost', '[::1]'].entries()) {
    const result = await devSignInAs(
      service,
      { host: `${name}:${port}`, origin: `http://${name}:${port}` },
      840_102 + index,
    );
    expect(result.status, name).toBe(200);
    expect(result.body.token).toMatch(/^lxs-/);
  }
  expect((await devSignInAs(service, { host: `localhost:${port}` }, 840_105)).status).toBe(200);
});
