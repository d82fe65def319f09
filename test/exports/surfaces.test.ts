import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';
import { runLingxi } from '../support/cli.js';
import { readableFromFirstChunk } from '../../src/exports/sinks.js';
import { streamStatementCsv } from '../../src/exports/statementCsv.js';
import { streamJournal } from '../../src/exports/streamJournal.js';
import { streamTrialBalanceCsv } from '../../src/exports/trialBalanceCsv.js';
import { buildBook, sealEverything, type Book } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { ADMIN_TOKEN, startTestService, type TestService } from '../support/service.js';
import { collect, scratchDir, tool } from './tools.js';

let database: TestDatabase;
let ledger: PostgresLedger;
let book: Book;
let service: TestService;
let dir: string;
let configFile: string;

beforeAll(async () => {
  database = await createTestDatabase();
  ledger = await openLedger(database.pool);
  book = await buildBook(database.pool, ledger);
  await sealEverything(database.pool);
  service = await startTestService({ databaseUrl: database.url });
  dir = scratchDir();
  configFile = join(dir, 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
});
afterAll(async () => {
  await service?.stop();
  await ledger.close();
  await database.drop();
});

const lingxi = (...args: string[]) => runLingxi(configFile, args);

async function auditCount(): Promise<number> {
  const { rows } = await database.pool.query<{ n: string }>(
    'select count(*)::text as n from audit_log',
  );
  return Number(rows[0]!.n);
}

async function get(path: string, token: string | null = ADMIN_TOKEN) {
  const response = await fetch(`${service.url}/admin${path}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return { status: response.status, headers: response.headers, text: await response.text() };
}

describe('lingxi export', () => {
  test('journal to stdout and to --out FILE: the same bytes as the library', async () => {
    const expected = await collect(streamJournal(database.pool, { format: 'beancount' }));
    const stdout = await lingxi('export', 'journal', '--format', 'beancount');
    expect(stdout).toMatchObject({ code: 0, stderr: '' });
    expect(stdout.stdout).toBe(expected);

    const file = join(dir, 'journal.beancount');
    const toFile = await lingxi(
      'export',
      'journal',
      '--format',
      'beancount',
      '--out',
      file,
      '--json',
    );
    expect(toFile.code).toBe(0);
    expect(JSON.parse(toFile.stdout)).toEqual({ file, bytes: Buffer.byteLength(expected) });
    expect(readFileSync(file, 'utf8')).toBe(expected);
    expect(existsSync(`${file}.partial`)).toBe(false);
    await tool('bean-check', [file]);

    // Reading the books from the CLI is audited like the admin API's exports.
    const { rows } = await database.pool.query<{ actor: string; details: { format: string } }>(
      `select actor, details from audit_log where action = 'export.journal' order by id`,
    );
    expect(rows.slice(-2).map((r) => r.details.format)).toEqual(['beancount', 'beancount']);
    for (const row of rows.slice(-2)) expect(row.actor).toMatch(/^cli:.+/);
  });

  test('filters, the hledger format and the other exports', async () => {
    const file = join(dir, 'bob.journal');
    const result = await lingxi(
      'export',
      'journal',
      '--format',
      'hledger',
      '--account',
      `liabilities:customers:${book.bob}`,
      '--from',
      '2000-01-01',
      '--out',
      file,
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^wrote \d+ bytes to /);
    await tool('hledger', ['-f', file, 'check', '--strict']);
    expect(readFileSync(file, 'utf8')).toContain(book.entries.bobEthDeposit);
    expect(readFileSync(file, 'utf8')).not.toContain(book.entries.aliceUsdtDeposit);

    const trial = await lingxi('export', 'trial-balance');
    expect(trial.stdout).toBe(await collect(streamTrialBalanceCsv(database.pool)));
    const statement = await lingxi('export', 'statement', '--user', book.alice);
    expect(statement.stdout.split('\n')[0]).toBe(
      'timestamp,entry_id,kind,description,amount,balance,currency,rate,rate_source,chain_ref',
    );
    const seals = await lingxi('export', 'seals');
    expect(JSON.parse(seals.stdout.split('\n')[0]!)).toMatchObject({
      seal: 1,
      algorithm: 'lingxi-seal-v1',
    });
  });

  test('bad usage exits 2 with a one-line reason', async () => {
    const format = await lingxi('export', 'journal', '--format', 'xlsx');
    expect(format.code).toBe(2);
    expect(format.stderr).toMatch(/xlsx/);
    const from = await lingxi('export', 'journal', '--format', 'csv', '--from', 'last tuesday');
    expect(from).toMatchObject({ code: 2, stdout: '' });
    expect(from.stderr).toMatch(/^lingxi: from must be an ISO 8601 date/);
    const user = await lingxi('export', 'statement', '--user', '424242');
    expect(user.code).toBe(2);
    expect(user.stderr).toMatch(/user 424242 does not exist/);
  });

  test("an empty --from (a script's unset variable) or a range that ends before it starts exits 2, writes nothing", async () => {
    const audited = await auditCount();
    const empty = await lingxi('export', 'journal', '--format', 'csv', '--from', '');
    expect(empty).toMatchObject({ code: 2, stdout: '' });
    expect(empty.stderr).toMatch(/^lingxi: --from names no time/);
    const emptyTo = await lingxi('export', 'statement', '--user', book.alice, '--to', ' ');
    expect(emptyTo).toMatchObject({ code: 2, stdout: '' });
    const reversed = await lingxi(
      'export',
      'journal',
      '--format',
      'hledger',
      '--from',
      '2026-11-28T08:00:00+08:00',
      '--to',
      '2026-11-27T23:00:00Z',
    );
    expect(reversed).toMatchObject({ code: 2, stdout: '' });
    expect(reversed.stderr).toMatch(/must not be after to/);
    expect(await auditCount()).toBe(audited);
  });

  test('a time off the clock, the calendar or the zones exits 2 and writes nothing', async () => {
    const audited = await auditCount();
    for (const args of [
      ['journal', '--format', 'csv', '--from', '2026-01-01T25:00:00Z'],
      ['journal', '--format', 'hledger', '--to', '2026-01-01T10:61Z'],
      ['journal', '--format', 'jsonl', '--from', '2026-01-01T10:00:00+99'],
      ['journal', '--format', 'beancount', '--from', '2026-02-29'],
      ['trial-balance', '--to', '2026-01-01T23:59:60Z'],
      ['statement', '--user', book.bob, '--from', '2026-04-31'],
    ]) {
      const result = await lingxi('export', ...args);
      expect({ args, ...result }).toMatchObject({ code: 2, stdout: '' });
      expect(result.stderr).toMatch(/^lingxi: (from|to) must be an ISO 8601 date/);
    }
    expect(await auditCount()).toBe(audited);
  });
});

describe('GET /admin/exports', () => {
  test('journal: streamed, the same bytes as the CLI, with a content type per format', async () => {
    for (const [format, type] of [
      ['csv', 'text/csv'],
      ['jsonl', 'application/x-ndjson'],
      ['hledger', 'text/plain'],
      ['beancount', 'text/plain'],
    ] as const) {
      const response = await get(`/exports/journal?format=${format}&to=2100-01-01`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain(type);
      expect(response.headers.get('content-disposition')).toMatch(
        /attachment; filename="lingxi-journal\./,
      );
      expect(response.text).toBe(
        (await lingxi('export', 'journal', '--format', format, '--to', '2100-01-01')).stdout,
      );
    }
    const filtered = await get(`/exports/journal?format=csv&account=expenses:network-fees`);
    expect(filtered.text.trimEnd().split('\n')).toHaveLength(1 + 3 + 4);
  });

  test('trial balance, statement and seals', async () => {
    const trial = await get('/exports/trial-balance');
    expect(trial.status).toBe(200);
    expect(trial.text).toBe(await collect(streamTrialBalanceCsv(database.pool)));
    const statement = await get(`/exports/statement?user=${book.bob}`);
    expect(statement.status).toBe(200);
    expect(statement.text).toContain(book.entries.reversal);
    expect((await get(`/exports/statement?user=9999999`)).status).toBe(404);
    const seals = await get('/exports/seals');
    expect(seals.status).toBe(200);
    expect(seals.text).toMatch(/"hash":"[0-9a-f]{64}"/);
  });

  test('bad requests answer in the contract error shape; the admin token is required', async () => {
    const format = await get('/exports/journal?format=pdf');
    expect(format.status).toBe(400);
    expect(JSON.parse(format.text)).toEqual({
      error: {
        message: 'format must be one of csv, jsonl, hledger, beancount',
        type: 'invalid_request_error',
        code: 'invalid_request',
        param: 'format',
      },
    });
    const from = await get('/exports/journal?format=csv&from=soon');
    expect(from.status).toBe(400);
    expect(JSON.parse(from.text).error.param).toBe('from');
    expect((await get('/exports/journal?format=csv', null)).status).toBe(401);
    const { rows } = await database.pool.query<{
      action: string;
      details: Record<string, unknown>;
    }>(
      `select action, details from audit_log where action like 'export.%' and actor = 'admin' order by id`,
    );
    expect(rows[0]).toMatchObject({
      action: 'export.journal',
      details: { format: 'csv', to: '2100-01-01' },
    });
  });

  test('a time off the clock, the calendar or the zones is a 400 on every export, never a cut-off 200', async () => {
    const audited = await auditCount();
    for (const [path, param] of [
      ['/exports/journal?format=hledger&from=2026-01-01T25:00:00Z', 'from'],
      ['/exports/journal?format=csv&from=2026-01-01T25:00:00Z', 'from'],
      ['/exports/journal?format=beancount&to=2026-01-01T10:61Z', 'to'],
      ['/exports/journal?format=jsonl&from=2026-01-01T10:00:00%2B99', 'from'],
      ['/exports/journal?format=csv&to=2026-01-01T10:00:00-14:30', 'to'],
      ['/exports/journal?format=csv&from=2026-02-29', 'from'],
      ['/exports/trial-balance?to=2026-01-01T25:00:00Z', 'to'],
      [`/exports/statement?user=${book.bob}&from=2026-01-01T25:00:00Z`, 'from'],
      [`/exports/statement?user=${book.bob}&to=2026-06-31`, 'to'],
    ] as const) {
      const response = await get(path);
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
      expect(JSON.parse(response.text).error).toMatchObject({ code: 'invalid_request', param });
    }
    expect(await auditCount()).toBe(audited);
    // The edges of the clock, the calendar and the zones still export.
    for (const path of [
      '/exports/journal?format=csv&from=2028-02-29T23:59:59.999999%2B14:00',
      '/exports/journal?format=hledger&to=2026-12-31T00:00-14',
      '/exports/trial-balance?to=2026-01-01%2023:59:59Z',
    ]) {
      expect({ path, status: (await get(path)).status }).toEqual({ path, status: 200 });
    }
  });
});

describe('a CSV export whose query fails', () => {
  // The header used to be its own first chunk, yielded before the first query: the HTTP
  // route then committed a 200 and the body broke off after the header.
  const badTime = '2026-01-01T25:00:00Z'; // past the filter's check, refused by PostgreSQL
  test('fails before its first chunk, so the route still answers an error status', async () => {
    for (const chunks of [
      streamJournal(database.pool, { format: 'csv', filter: { from: badTime } }),
      streamTrialBalanceCsv(database.pool, { to: badTime }),
      streamStatementCsv(database.pool, { userId: book.bob, from: badTime }),
    ]) {
      await expect(readableFromFirstChunk(chunks)).rejects.toThrow(/out of range/);
    }
  });

  test('still starts with its header when nothing matches', async () => {
    const empty = await collect(
      streamJournal(database.pool, { format: 'csv', filter: { from: '2999-01-01' } }),
    );
    expect(empty.split('\n')).toEqual([expect.stringMatching(/^entry_id,timestamp,/), '']);
    const statement = await collect(
      streamStatementCsv(database.pool, { userId: book.bob, from: '2999-01-01' }),
    );
    expect(statement).toBe(
      'timestamp,entry_id,kind,description,amount,balance,currency,rate,rate_source,chain_ref\n',
    );
  });
});
