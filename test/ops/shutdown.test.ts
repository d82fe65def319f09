import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';
import { ADMIN_TOKEN, userWithKey } from '../support/service.js';
import {
  countPromptTokens,
  startUpstreamStub,
  type UpstreamStub,
} from '../support/upstream-stub.js';
import { expectedCost, gatewayConfig, MODELS } from '../gateway/fixtures.js';

/**
 * `lingxi serve` as operators run it: a real child process, stopped with SIGTERM in the
 * middle of a streamed API call. The call must finish and be settled, readiness must say
 * 503 while the process drains, and the process must exit 0.
 */

const SHUTDOWN_DELAY_MS = 1500;
const TOKENS = 20;
const EVENT_DELAY_MS = 150;

let database: TestDatabase;
let stub: UpstreamStub;
let dir: string;
let child: ChildProcess | null = null;

beforeAll(async () => {
  database = await createTestDatabase();
  stub = await startUpstreamStub({ apiKey: 'upstream-secret' });
  dir = mkdtempSync(join(tmpdir(), 'lingxi-shutdown-'));
});
afterAll(async () => {
  child?.kill('SIGKILL');
  await stub?.close();
  await database?.drop();
  rmSync(dir, { recursive: true, force: true });
});

async function serve(): Promise<Omit<LingxiProcess, 'url'> & { url: string }> {
  const configFile = join(dir, 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      http: {
        host: '127.0.0.1',
        port: 0,
        shutdownDelayMs: SHUTDOWN_DELAY_MS,
        shutdownGraceMs: 20_000,
      },
      database: { url: database.url, poolSize: 5 },
      adminToken: ADMIN_TOKEN,
      log: { level: 'info' },
      ...gatewayConfig(stub.url),
    }),
  );
  const started = startLingxi(['serve', '--config', configFile]);
  child = started.child;
  return { ...started, url: await started.url() };
}

/** /readyz's status; 'refused' once nothing listens (a probe that merely times out is not that). */
async function readyStatus(url: string): Promise<number | 'refused' | 'timeout'> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(10_000) });
    await response.arrayBuffer();
    return response.status;
  } catch (error) {
    return (error as Error).name === 'TimeoutError' ? 'timeout' : 'refused';
  }
}

test('SIGTERM mid-stream: readiness turns 503, the stream completes and is settled, exit 0', async () => {
  const served = await serve();
  expect(await readyStatus(served.url)).toBe(200);
  const { userId, apiKey } = await userWithKey(served, { telegramId: 7001, balance: '5' });

  const messages = [
    { role: 'user', content: `count slowly [[tokens=${TOKENS}]] [[delay=${EVENT_DELAY_MS}]]` },
  ];
  const response = await fetch(`${served.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages, stream: true }),
  });
  expect(response.status).toBe(200);
  const requestId = response.headers.get('x-request-id');
  expect(requestId).toMatch(/^req_/);

  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const first = await reader.read();
  text += decoder.decode(first.value, { stream: true });
  expect(text).toContain('data: ');

  // The stream is under way: stop the process.
  const signalledAt = Date.now();
  served.child.kill('SIGTERM');

  // Probes until the listener is gone (it closes after SHUTDOWN_DELAY_MS, or later on a
  // loaded machine), not for a fixed time.
  const readiness: Array<number | 'refused' | 'timeout'> = [];
  const probing = (async () => {
    while (Date.now() - signalledAt < 30_000) {
      const status = await readyStatus(served.url);
      readiness.push(status);
      if (status === 'refused') break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();

  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const streamEndedAt = Date.now();
  await probing;
  const { code, signal } = await served.exited;
  const exitedAt = Date.now();
  child = null;

  // Readiness said 503 while the process still answered (a probe that raced the signal may
  // have seen 200 just before), then the listener went away.
  const firstNotReady = readiness.indexOf(503);
  expect(firstNotReady).toBeGreaterThanOrEqual(0);
  expect(readiness.slice(0, firstNotReady).every((status) => status === 200)).toBe(true);
  expect(readiness.slice(firstNotReady, -1).every((status) => status === 503)).toBe(true);
  expect(readiness.at(-1)).toBe('refused');

  // The stream ran to its end: every token, then [DONE].
  const tokens = [...text.matchAll(/"content":"tok(\d+) "/g)].map((m) => Number(m[1]));
  expect(tokens).toEqual(Array.from({ length: TOKENS }, (_, i) => i));
  expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
  expect(streamEndedAt - signalledAt).toBeGreaterThan(SHUTDOWN_DELAY_MS);

  expect(signal).toBeNull();
  expect(code).toBe(0);
  // Nothing lingers once the work is done (a forgotten timer or socket would hold the exit:
  // the keep-alive timeout is 65 s, the grace timer 20 s from the listener's close). About
  // 1.5 s on a loaded 2-core machine.
  expect(exitedAt - streamEndedAt).toBeLessThan(12_000);

  // Settled in the database: one usage row for exactly the tokens, its hold posted, none left.
  const usage = await database.pool.query<{
    outcome: string;
    prompt_tokens: string;
    completion_tokens: string;
    cost_usd: string;
    hold_id: string;
  }>(
    `select outcome, prompt_tokens, completion_tokens, cost_usd::text, hold_id
       from usage_records where request_id = $1`,
    [requestId],
  );
  expect(usage.rows).toHaveLength(1);
  const row = usage.rows[0]!;
  const prompt = countPromptTokens({ messages });
  expect(row).toMatchObject({
    outcome: 'ok',
    prompt_tokens: String(prompt),
    completion_tokens: String(TOKENS),
  });
  const cost = expectedCost(MODELS.mini, { prompt, completion: TOKENS });
  expect(row.cost_usd).toBe(cost.toString());
  const hold = await database.pool.query<{ status: string; posted_amount: string }>(
    'select status, posted_amount::text from ledger_holds where id = $1',
    [row.hold_id],
  );
  expect(hold.rows).toEqual([{ status: 'posted', posted_amount: cost.toString() }]);
  const pending = await database.pool.query<{ n: number }>(
    `select count(*)::int as n from ledger_holds where status = 'pending'`,
  );
  expect(pending.rows[0]!.n).toBe(0);
  const balance = await database.pool.query<{ balance: string }>(
    `select (credits_posted - debits_posted)::text as balance from ledger_accounts where code = $1`,
    [`liabilities:customers:${userId}`],
  );
  expect(balance.rows[0]!.balance).toBe(cost.neg().add(5).toString());

  // The log is JSON throughout, tells the shutdown in order, and names the request.
  expect(served.log.filter((entry) => entry['notJson'])).toEqual([]);
  const messagesInOrder = served.log.map((entry) => String(entry['msg']));
  const at = (prefix: string) => messagesInOrder.findIndex((m) => m.startsWith(prefix));
  expect(at('shutting down')).toBeGreaterThan(-1);
  expect(at('shutdown: not ready')).toBeGreaterThan(at('shutting down'));
  expect(at('shutdown: stopped accepting')).toBeGreaterThan(at('shutdown: not ready'));
  expect(at('shutdown: http stopped')).toBeGreaterThan(at('shutdown: stopped accepting'));
  expect(at('shutdown: ledger drained')).toBeGreaterThan(at('shutdown: http stopped'));
  const callLine = served.log.find(
    (entry) => entry['msg'] === 'request' && entry['path'] === '/v1/chat/completions',
  );
  expect(callLine).toMatchObject({ requestId, status: 200 });

  console.info(
    `shutdown: stream ended ${streamEndedAt - signalledAt} ms after SIGTERM, process exited ` +
      `${exitedAt - signalledAt} ms after it; readiness probes: ${readiness.join(' ')}`,
  );
}, 120_000);
