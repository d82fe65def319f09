import { afterAll, beforeAll, expect, test } from 'vitest';
import { expectErrorShape } from '../accounts/support.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.js';

/** With `metricsToken` set, /metrics answers only a scraper that sends it. */

const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
let database: TestDatabase;
let service: TestService;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { metricsToken: METRICS_TOKEN },
  });
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

const scrape = (authorization?: string) =>
  fetch(`${service.url}/metrics`, authorization ? { headers: { authorization } } : {});

test('no token, a wrong one, or the admin token: 401 in the documented shape, no metrics', async () => {
  for (const authorization of [
    undefined,
    'Bearer wrong-token-0123456789',
    `Bearer ${ADMIN_TOKEN}`,
    METRICS_TOKEN,
  ]) {
    const response = await scrape(authorization);
    expect(response.status, authorization).toBe(401);
    const body: unknown = await response.json();
    expectErrorShape(body, 'invalid_metrics_token');
    expect(JSON.stringify(body)).not.toContain('lingxi_http_requests_total');
  }
});

test('the right token gets the Prometheus text', async () => {
  const response = await scrape(`Bearer ${METRICS_TOKEN}`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  expect(await response.text()).toMatch(/^# HELP lingxi_/m);
});

test('health and readiness stay open to probes', async () => {
  expect((await fetch(`${service.url}/livez`)).status).toBe(200);
  expect((await fetch(`${service.url}/readyz`)).status).toBe(200);
});
