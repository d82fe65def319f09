import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runLingxi } from './support/cli.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { ledgerRowCounts } from './support/ledger.js';

let database: TestDatabase;
let dir: string;
let configFile: string;

beforeAll(async () => {
  database = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'lingxi-entries-'));
  configFile = join(dir, 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
});
afterAll(async () => {
  await database?.drop();
});

const lingxi = (...args: string[]) => runLingxi(configFile, args);

let files = 0;
function entryFile(entry: unknown): string {
  const path = join(dir, `entry-${(files += 1)}.json`);
  writeFileSync(path, JSON.stringify(entry));
  return path;
}

const CUSTODY = 'assets:custody:tron:USDT:TXYZrefundAddress';

async function audits(action: string) {
  const { rows } = await database.pool.query<{ actor: string; target: string }>(
    'select actor, target from audit_log where action = $1 order by id',
    [action],
  );
  return rows;
}

test('entries post: a custody correction is booked, nets to zero, is audited and replays under its key', async () => {
  const correction = {
    description: 'refund of 7 USDT sent from the deposit address, tx abc',
    postings: [
      { account: 'equity:trading:USDT', amount: '7' },
      { account: CUSTODY, amount: '-7', currency: 'USDT' },
    ],
    metadata: { chain: { network: 'tron', txHash: 'abc', logIndex: 0, blockNumber: '5000' } },
    effectiveAt: '2024-05-01T10:00:00Z',
  };
  const file = entryFile(correction);
  const posted = await lingxi(
    'entries',
    'post',
    '--file',
    file,
    '--idempotency-key',
    'r1',
    '--json',
  );
  expect(posted.stderr).toBe('');
  expect(posted.code).toBe(0);
  expect(posted.json()).toEqual({ entryId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
  const entryId = posted.json()['entryId'] as string;

  const { rows } = await database.pool.query<{
    kind: string;
    metadata: Record<string, unknown>;
    effective_at: Date;
  }>('select kind, metadata, effective_at from ledger_entries where id = $1', [entryId]);
  expect(rows[0]!.kind).toBe('manual');
  expect(rows[0]!.metadata['chain']).toEqual(correction.metadata.chain);
  expect(rows[0]!.metadata['actor']).toMatch(/^cli:/);
  expect(rows[0]!.effective_at.toISOString()).toBe('2024-05-01T10:00:00.000Z');

  const tb = (await lingxi('trial-balance', '--json')).json() as {
    accounts: Array<{ account: string; credit: string }>;
    totals: Array<{ net: string }>;
  };
  expect(tb.accounts).toContainEqual(expect.objectContaining({ account: CUSTODY, credit: '7' }));
  for (const total of tb.totals) expect(total.net).toBe('0');
  const lines = await database.pool.query<{ entry_id: string }>(
    `select p.entry_id from ledger_postings p join ledger_accounts a on a.id = p.account_id
      where a.code = $1`,
    [CUSTODY],
  );
  expect(lines.rows.map((r) => r.entry_id)).toEqual([entryId]);
  expect(await audits('entry.post')).toEqual([
    { actor: expect.stringMatching(/^cli:/), target: `entry:${entryId}` },
  ]);

  const before = await ledgerRowCounts(database.pool);
  const again = await lingxi(
    'entries',
    'post',
    '--file',
    file,
    '--idempotency-key',
    'r1',
    '--json',
  );
  expect(again.code).toBe(0);
  expect(again.json()).toEqual({ entryId });
  const other = entryFile({ ...correction, description: 'another refund' });
  const conflict = await lingxi('entries', 'post', '--file', other, '--idempotency-key', 'r1');
  expect(conflict.code).toBe(1);
  expect(conflict.stderr).toMatch(/already used for a different request/);
  expect(await ledgerRowCounts(database.pool)).toEqual(before);
  expect(await audits('entry.post')).toHaveLength(1);
});

test('entries post: bad entries exit 2, refusals exit 1, and nothing is written', async () => {
  const user = await lingxi('users', 'create', '--telegram-id', '881', '--json');
  const userId = user.json()['id'] as string;
  expect((await lingxi('credit', '--user', userId, '--amount', '1', '--reason', 'x')).code).toBe(0);
  const d = 'a correction';
  const cases: Array<[string, unknown, number, RegExp]> = [
    [
      'unbalanced',
      {
        description: d,
        postings: [
          { account: CUSTODY, amount: '1', currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: '-2' },
        ],
      },
      2,
      /do not balance/,
    ],
    [
      'bad amount',
      {
        description: d,
        postings: [
          { account: CUSTODY, amount: '1e3', currency: 'USDT' },
          { account: 'equity:trading:USDT', amount: '-1000' },
        ],
      },
      2,
      /postings\[0\]\.amount/,
    ],
    [
      'unknown currency',
      {
        description: d,
        postings: [
          { account: 'assets:custody:tron:DOGE:Tx', amount: '1', currency: 'DOGE' },
          { account: 'equity:trading:DOGE', amount: '-1' },
        ],
      },
      2,
      /unknown currency "DOGE"/,
    ],
    [
      'revenue:usage',
      {
        description: d,
        postings: [
          { account: `liabilities:customers:${userId}`, amount: '0.5' },
          { account: 'revenue:usage', amount: '-0.5' },
        ],
      },
      2,
      /metered calls/,
    ],
    [
      'over-drawing a customer',
      {
        description: d,
        postings: [
          { account: `liabilities:customers:${userId}`, amount: '1.5' },
          { account: 'expenses:losses', amount: '-1.5' },
        ],
      },
      1,
      /available/,
    ],
    [
      'a customer account of no user',
      {
        description: d,
        postings: [
          { account: 'expenses:promotions', amount: '1' },
          { account: 'liabilities:customers:999999', amount: '-1' },
        ],
      },
      2,
      /does not exist/,
    ],
    ['no description', { postings: [] }, 2, /description/],
  ];
  const before = await ledgerRowCounts(database.pool);
  for (const [what, entry, code, message] of cases) {
    const result = await lingxi('entries', 'post', '--file', entryFile(entry), '--json');
    expect({ what, code: result.code }).toEqual({ what, code });
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe('');
    expect(await ledgerRowCounts(database.pool)).toEqual(before);
  }
  const notJson = join(dir, 'broken.json');
  writeFileSync(notJson, '{"description": ');
  expect((await lingxi('entries', 'post', '--file', notJson)).code).toBe(2);
  expect((await lingxi('entries', 'post', '--file', join(dir, 'missing.json'))).code).toBe(2);
  expect(await ledgerRowCounts(database.pool)).toEqual(before);
});

test('entries reverse: once, audited; a second reversal exits 1 and writes nothing', async () => {
  const posted = await lingxi(
    'entries',
    'post',
    '--json',
    '--file',
    entryFile({
      description: 'mistaken custody entry',
      postings: [
        { account: 'assets:custody:tron:USDT:TMistake', amount: '3', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-3' },
      ],
    }),
  );
  expect(posted.code).toBe(0);
  const entryId = posted.json()['entryId'] as string;
  const reversed = await lingxi(
    'entries',
    'reverse',
    '--entry',
    entryId,
    '--reason',
    'booked on the wrong address',
    '--idempotency-key',
    'rv1',
    '--json',
  );
  expect(reversed.code).toBe(0);
  expect(reversed.json()).toEqual({
    entryId: expect.stringMatching(/^[0-9a-f-]{36}$/),
    reversedEntryId: entryId,
  });
  const { rows } = await database.pool.query<{ kind: string; metadata: { reason: string } }>(
    'select kind, metadata from ledger_entries where reverses_entry_id = $1',
    [entryId],
  );
  expect(rows).toEqual([
    {
      kind: 'manual.reversal',
      metadata: { reason: 'booked on the wrong address', actor: expect.stringMatching(/^cli:/) },
    },
  ]);
  expect(await audits('entry.reverse')).toEqual([
    { actor: expect.stringMatching(/^cli:/), target: `entry:${entryId}` },
  ]);

  const before = await ledgerRowCounts(database.pool);
  const replay = await lingxi(
    'entries',
    'reverse',
    '--entry',
    entryId,
    '--reason',
    'booked on the wrong address',
    '--idempotency-key',
    'rv1',
    '--json',
  );
  expect(replay.code).toBe(0);
  expect(replay.json()).toEqual(reversed.json());
  const twice = await lingxi('entries', 'reverse', '--entry', entryId, '--reason', 'again');
  expect(twice.code).toBe(1);
  expect(twice.stderr).toMatch(/already reversed/);
  expect(await ledgerRowCounts(database.pool)).toEqual(before);
  expect(await audits('entry.reverse')).toHaveLength(1);
});
