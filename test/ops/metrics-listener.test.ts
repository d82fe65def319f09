import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { messages, startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';

/**
 * A process without the http role (`lingxi cron`, `lingxi watch`) serves /metrics and the
 * probes on `--metrics-port`, so an operator can scrape and probe every process of a
 * deployment, not only the http ones.
 */

const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
let database: TestDatabase;
let dir: string;
const running: LingxiProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'lingxi-metrics-'));
});
afterAll(async () => {
  for (const process of running) process.child.kill('SIGKILL');
  await database?.drop();
  rmSync(dir, { recursive: true, force: true });
});

function cronConfig(): string {
  const file = join(dir, 'cron.json');
  writeFileSync(
    file,
    JSON.stringify({
      log: { level: 'info' },
      http: { host: '127.0.0.1' },
      database: { url: database.url, poolSize: 3 },
      metricsToken: METRICS_TOKEN,
      // Every second, so the test sees turns of the job (node-cron's six-field form).
      cron: { expireHolds: '* * * * * *', reconcile: '0 0 1 1 *', seal: '0 0 1 1 *' },
    }),
  );
  return file;
}

test('lingxi cron --metrics-port: /metrics (behind metricsToken) counts the job turns; /livez and /readyz answer; SIGTERM stops it', async () => {
  const lingxi = startLingxi(['cron', '--config', cronConfig(), '--metrics-port', '0']);
  running.push(lingxi);
  const listening = await lingxi.waitForLog((entry) =>
    String(entry['msg']).startsWith('metrics listening'),
  );
  const url = String(listening['url']);
  expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

  expect((await fetch(`${url}/livez`)).status).toBe(200);
  expect(await (await fetch(`${url}/readyz`)).json()).toEqual({ status: 'ok', database: 'ok' });
  const refused = await fetch(`${url}/metrics`);
  expect(refused.status).toBe(401);
  expect(((await refused.json()) as { error: { type: string } }).error.type).toBeTruthy();

  const scrape = async () => {
    const response = await fetch(`${url}/metrics`, {
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(response.status).toBe(200);
    return response.text();
  };
  await lingxi.waitForLog(
    (entry) => entry['msg'] === 'cron job done' && entry['job'] === 'expire-holds',
  );
  const text = await scrape();
  const turns = /^lingxi_cron_job_runs_total\{job="expire-holds",outcome="ok"\} (\d+)$/m.exec(text);
  expect(Number(turns?.[1])).toBeGreaterThanOrEqual(1);
  const lastSuccess =
    /^lingxi_cron_job_last_success_timestamp_seconds\{job="expire-holds"\} ([\d.e+]+)$/m.exec(text);
  expect(Math.abs(Number(lastSuccess?.[1]) - Date.now() / 1000)).toBeLessThan(120);
  expect(text).toMatch(/^lingxi_ledger_holds_open 0$/m);

  // Nothing else is served there.
  expect((await fetch(`${url}/v1/models`)).status).toBe(404);

  lingxi.child.kill('SIGTERM');
  expect(await lingxi.exited).toEqual({ code: 0, signal: null });
  expect(messages(lingxi.log)).toContain('shutdown: cron stopped');
  await expect(fetch(`${url}/livez`)).rejects.toThrow();
});

test('lingxi watch --metrics-port that is not a port: a clear error, exit 2 (bad input)', async () => {
  const lingxi = startLingxi(['watch', '--config', cronConfig(), '--metrics-port', 'ninety']);
  running.push(lingxi);
  const { code } = await lingxi.exited;
  expect(code).toBe(2);
  expect(JSON.stringify(lingxi.log)).toContain('--metrics-port ninety is not a port number');
});
