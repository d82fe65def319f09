import { chromium, type Browser } from 'playwright-core';
import { sql } from 'kysely';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { call, devSignIn } from '../accounts/support.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, type TestService } from '../support/service.js';
import { CHROMIUM_LAUNCH, waitForText } from './browser.js';

/** Markup that runs a script if it is ever parsed as HTML: it sets window.__xss. */
const payload = (tag: string) =>
  `<img src=x onerror="window.__xss=(window.__xss||[]).concat('${tag}')">`;

let database: TestDatabase;
let service: TestService;
let browser: Browser;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { telegram: { devSignIn: true } },
  });
  browser = await chromium.launch(CHROMIUM_LAUNCH);
});
afterAll(async () => {
  await browser?.close();
  await service?.stop();
  await database?.drop();
});

test('a Telegram first name and key names that are markup are shown as text: no script runs', async () => {
  const user = await devSignIn(service, 880001);
  // Telegram lets a first name be anything; no username, so the page shows the first name.
  await sql`update users set username = null, first_name = ${payload('name')} where id = ${user.userId}`.execute(
    service.runtime.database.db,
  );
  const created = await call(service, 'POST', '/api/me/keys', {
    token: user.token,
    body: { name: payload('key') },
  });
  expect(created.status).toBe(201);

  const context = await browser.newContext();
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (error) => problems.push(error.message));
  await page.goto(`${service.url}/`);
  await page.evaluate((token) => sessionStorage.setItem('lingxi.session', token), user.token);
  await page.reload();
  await waitForText(page, '#who', payload('name'));
  await waitForText(page, '#keys-table tbody tr .name', payload('key'));
  await page.getByRole('button', { name: /^Revoke key / }).click();
  await page.waitForTimeout(300);
  expect(
    await page.evaluate(() => (window as unknown as { __xss?: string[] }).__xss ?? []),
  ).toEqual([]);
  expect(await page.locator('img[src="x"]').count()).toBe(0);
  expect(problems).toEqual([]);
  await context.close();
});

test('every answer, JSON and errors included, is marked nosniff and may not be framed', async () => {
  const user = await devSignIn(service, 880002);
  const answers: Array<[string, string | undefined, number]> = [
    ['/', undefined, 200],
    ['/api/config', undefined, 200],
    ['/api/me', user.token, 200],
    ['/api/me/keys', user.token, 200],
    ['/api/me', undefined, 401],
    ['/api/me/deposit-addresses/nope/qr.svg', user.token, 404],
    ['/nope', undefined, 404],
    ['/openapi.json', undefined, 200],
    ['/v1/models', undefined, 401],
  ];
  for (const [path, token, status] of answers) {
    const response = await fetch(`${service.url}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    expect(response.status, path).toBe(status);
    expect(response.headers.get('x-content-type-options'), path).toBe('nosniff');
    expect(response.headers.get('content-security-policy'), path).toContain(
      "frame-ancestors 'none'",
    );
  }
  // The page keeps its own policy (its script, styles, the Telegram widget).
  const page = await fetch(`${service.url}/`);
  expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
  const json = await fetch(`${service.url}/api/config`);
  expect(json.headers.get('content-security-policy')).toBe(
    "default-src 'none'; frame-ancestors 'none'",
  );
});
