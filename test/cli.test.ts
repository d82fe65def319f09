import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { migrations } from '../migrations/index.js';
import { runLingxi } from './support/cli.js';
import { runCli } from '../src/cli/main.js';
import { rowCounts } from './accounts/support.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { withDatabase } from './support/global-setup.js';

let database: TestDatabase;
let configFile: string;

beforeAll(async () => {
  database = await createTestDatabase();
  configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-cli-')), 'lingxi.config.json');
  writeFileSync(configFile, JSON.stringify({ database: { url: database.url } }));
});
afterAll(async () => {
  await database?.drop();
});

const lingxi = (...args: string[]) => runLingxi(configFile, args);

test('users, credits, balances and the trial balance, with the contract --json shapes and exit codes', async () => {
  const user = await lingxi(
    'users',
    'create',
    '--telegram-id',
    '777',
    '--username',
    'alice',
    '--json',
  );
  expect(user.code).toBe(0);
  const id = user.json()['id'] as string;
  expect(id).toMatch(/^\d+$/);

  const credit = await lingxi(
    'credit',
    '--user',
    id,
    '--amount',
    '12.5',
    '--reason',
    'welcome',
    '--idempotency-key',
    'w1',
    '--json',
  );
  expect(credit.code).toBe(0);
  expect(credit.json()).toEqual({ entryId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
  const again = await lingxi(
    'credit',
    '--user',
    id,
    '--amount',
    '12.5',
    '--reason',
    'welcome',
    '--idempotency-key',
    'w1',
    '--json',
  );
  expect(again.json()).toEqual(credit.json());

  expect((await lingxi('balance', '--user', id, '--json')).json()).toEqual({
    currency: 'USD',
    available: '12.5',
    posted: '12.5',
    held: '0',
  });

  const key = await lingxi('keys', 'create', '--user', id, '--name', 'laptop', '--json');
  expect(key.json()).toEqual({ id: expect.any(String), key: expect.stringMatching(/^lx-/) });

  const trial = (await lingxi('trial-balance', '--json')).json() as {
    accounts: unknown[];
    totals: unknown[];
  };
  expect(trial.accounts).toContainEqual({
    account: `liabilities:customers:${id}`,
    currency: 'USD',
    debit: '0',
    credit: '12.5',
    balance: '-12.5',
  });
  expect(trial.totals).toEqual([{ currency: 'USD', debit: '12.5', credit: '12.5', net: '0' }]);

  // Every change made from the CLI is in the audit log, under the operator's login name;
  // the replayed credit once.
  const { rows } = await database.pool.query<{ actor: string; action: string; target: string }>(
    `select actor, action, target from audit_log order by id`,
  );
  expect(rows.map((r) => [r.action, r.target])).toEqual([
    ['user.create', `user:${id}`],
    ['balance.adjust', `user:${id}`],
    ['key.create', `user:${id}`],
  ]);
  for (const row of rows) expect(row.actor).toMatch(/^cli:.+/);
});

test('the same credit run several times at once with one --idempotency-key is written once', async () => {
  const user = await lingxi('users', 'create', '--telegram-id', '779', '--json');
  const id = user.json()['id'] as string;
  const runs = await Promise.all(
    Array.from({ length: 6 }, () =>
      lingxi(
        'credit',
        '--user',
        id,
        '--amount',
        '3.25',
        '--reason',
        'retry',
        '--idempotency-key',
        'r1',
        '--json',
      ),
    ),
  );
  for (const run of runs)
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
  expect(new Set(runs.map((run) => run.json()['entryId'])).size).toBe(1);
  expect((await lingxi('balance', '--user', id, '--json')).json()).toMatchObject({
    posted: '3.25',
  });
});

test('a refusal exits 1 with a one-line reason; bad usage exits 2', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '778', '--json')).json()[
    'id'
  ] as string;
  const overdraw = await lingxi('credit', '--user', user, '--amount', '-1', '--reason', 'x');
  expect(overdraw.code).toBe(1);
  expect(overdraw.stderr).toMatch(/^lingxi: .*has 0 available, 1 required\n$/);
  const duplicate = await lingxi('users', 'create', '--telegram-id', '778');
  expect(duplicate.code).toBe(1);
  const badAmount = await lingxi('credit', '--user', user, '--amount', '1e5', '--reason', 'x');
  expect(badAmount.code).toBe(2);
  expect(badAmount.stderr).toMatch(/not a decimal string/);
  expect((await lingxi('balance')).code).toBe(2);
  expect((await lingxi('balance', '--user', '99999')).code).toBe(2);
});

test('a --user id past the bigint range is a user that does not exist (exit 2), nothing written', async () => {
  const before = await rowCounts(database.pool);
  for (const id of ['9223372036854775808', '9999999999999999999']) {
    for (const args of [
      ['balance', '--user', id],
      ['keys', 'create', '--user', id],
      ['credit', '--user', id, '--amount', '1', '--reason', 'goodwill'],
      ['export', 'statement', '--user', id],
    ]) {
      const result = await lingxi(...args);
      expect({ args, code: result.code, stdout: result.stdout }).toEqual({
        args,
        code: 2,
        stdout: '',
      });
      expect(result.stderr).toBe(`lingxi: user ${id} does not exist\n`);
    }
  }
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('deposits list: a limit or a user id that is not one is bad usage (exit 2), not a database error', async () => {
  for (const args of [
    ['--limit', 'abc'],
    ['--limit', '0'],
    ['--limit', '201'],
    ['--limit', '1.5'],
    ['--user', 'abc'],
    ['--user', '9999999999999999999'],
  ]) {
    const result = await lingxi('deposits', 'list', ...args);
    expect({ args, code: result.code, stdout: result.stdout }).toEqual({
      args,
      code: 2,
      stdout: '',
    });
    expect(result.stderr).toMatch(/^lingxi: --(limit|user) \S+: /);
  }
  const listed = await lingxi('deposits', 'list', '--limit', '200', '--json');
  expect(listed.code).toBe(0);
  expect(listed.json()).toEqual({ data: [], nextCursor: null });
});

test('`lingxi migrate` on an empty database applies every migration, then finds nothing to do', async () => {
  const adminUrl = inject('pgAdminUrl');
  // Named like the run's databases, so a run that dies before dropping it has it swept later.
  const name = `${inject('pgTemplate').replace(/_template$/, '')}_empty`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const file = join(mkdtempSync(join(tmpdir(), 'lingxi-migrate-')), 'lingxi.config.json');
  writeFileSync(file, JSON.stringify({ database: { url: withDatabase(adminUrl, name) } }));
  const migrate = async () => {
    let stdout = '';
    let stderr = '';
    const code = await runCli(['migrate', '--json', '--config', file], {
      stdout: (text) => (stdout += text),
      stderr: (text) => (stderr += text),
    });
    return {
      code,
      stderr,
      applied: stdout ? (JSON.parse(stdout) as { applied: string[] }).applied : null,
    };
  };
  try {
    expect(await migrate()).toEqual({ code: 0, stderr: '', applied: Object.keys(migrations) });
    expect(await migrate()).toEqual({ code: 0, stderr: '', applied: [] });
  } finally {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
});

test('`lingxi watch` with no networks configured, or a network not in the config, exits 2 saying why', async () => {
  const none = await lingxi('watch');
  expect(none).toMatchObject({ code: 2, stdout: '' });
  expect(none.stderr).toMatch(/^lingxi: no networks are configured: there is nothing to watch/);
  const unknown = await lingxi('watch', '--network', 'nope');
  expect(unknown).toMatchObject({ code: 2, stdout: '' });
  expect(unknown.stderr).toMatch(/^lingxi: no network named "nope" in the config \(known: none\)/);
});
