import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../ledger/index.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

/** `lingxi demo --ci` as a new user would run it, checked by its final state. */

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.drop();
});

test('the demo runs every step non-interactively and leaves correct books', async () => {
  const cwd = process.cwd();
  const child = spawn(
    process.execPath,
    ['bin/lingxi.js', 'demo', '--ci', '--json', '--port', '0'],
    {
      cwd,
      env: {
        ...process.env,
        LINGXI_FROM_SOURCE: '1',
        DATABASE_URL: database.url,
        TMPDIR: mkdtempSync(join(tmpdir(), 'lingxi-demo-')),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect(code, stderr).toBe(0);
  expect(stderr).toMatch(/✔ {2}1\. Starting an EVM devnet/);
  expect(stderr).not.toMatch(/✘/);
  const summary = JSON.parse(stdout) as {
    deposits: Array<{ network: string; asset: string; status: string; amountUsd: string }>;
    balanceAfterDeposits: string;
    calls: Array<{ costUsd: string }>;
    balance: { available: string; held: string };
    reconciliation: { status: string; findings: number };
    export: { hledgerCheck: string; file: string };
  };
  // 100 USDT + 0.05 ETH at 3123.45678901 + 50 USDT on Tron.
  expect(summary.deposits.map((d) => [d.network, d.asset, d.status, d.amountUsd]).sort()).toEqual([
    ['devnet', 'ETH', 'credited', '156.1728394505'],
    ['devnet', 'USDT', 'credited', '100'],
    ['tron-sim', 'USDT', 'credited', '50'],
  ]);
  expect(summary.balanceAfterDeposits).toBe('306.1728394505');
  const spent = summary.calls.reduce((sum, c) => sum.add(c.costUsd), new Decimal(0));
  expect(spent.gt(0)).toBe(true);
  expect(summary.balance).toMatchObject({
    available: new Decimal('306.1728394505').sub(spent).toString(),
    held: '0',
  });
  expect(summary.reconciliation, stderr).toEqual({
    runId: expect.any(String),
    status: 'clean',
    findings: 0,
  });
  expect(summary.export.hledgerCheck).toBe('passed');

  // What the database says agrees with what the demo printed.
  const { rows } = await database.pool.query(`
    select (select count(*)::int from usage_records where outcome = 'ok') as calls,
           (select coalesce(sum(cost_usd), 0)::text from usage_records) as usage,
           (select (-sum(p.amount))::text from ledger_postings p join ledger_accounts a on a.id = p.account_id where a.code = 'revenue:usage') as revenue`);
  expect(rows[0].calls).toBe(2);
  expect(new Decimal(rows[0].usage).toString()).toBe(spent.toString());
  expect(new Decimal(rows[0].revenue).toString()).toBe(spent.toString());
}, 180_000);
