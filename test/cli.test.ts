import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
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

/** Tether's USDT on Ethereum mainnet. */
const USDT_ETHEREUM = '0xdac17f958d2ee523a2206206994597c13d831ec7';

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

test('users create --idempotency-key: a rerun after the answer was lost prints the same user and writes nothing; other arguments are refused', async () => {
  const create = (...extra: string[]) =>
    lingxi('users', 'create', '--telegram-id', '7001', '--username', 'bob', ...extra);
  // The operator's terminal died after sending: the first answer never reached them.
  const lost = await create('--idempotency-key', 'onboard-bob', '--json');
  expect(lost.code).toBe(0);
  const before = await rowCounts(database.pool);
  const audited = await database.pool.query(`select count(*)::int as n from audit_log`);

  const retry = await create('--idempotency-key', 'onboard-bob', '--json');
  expect({ code: retry.code, stderr: retry.stderr }).toEqual({ code: 0, stderr: '' });
  expect(retry.json()).toEqual(lost.json());
  const human = await create('--idempotency-key', 'onboard-bob');
  expect(human.stdout).toBe(
    `created user ${lost.json()['id'] as string} (by an earlier run with this --idempotency-key; nothing written now)\n`,
  );

  // The same key for another request: refused (exit 1) with the conflict, nothing written.
  for (const other of [
    ['users', 'create', '--telegram-id', '7001', '--username', 'robert'],
    ['users', 'create', '--telegram-id', '7002', '--username', 'bob'],
    ['keys', 'create', '--user', lost.json()['id'] as string],
  ]) {
    const conflict = await lingxi(...other, '--idempotency-key', 'onboard-bob', '--json');
    expect({
      other,
      code: conflict.code,
      stdout: conflict.stdout,
      stderr: conflict.stderr,
    }).toEqual({
      other,
      code: 1,
      stdout: '',
      stderr: 'lingxi: this --idempotency-key was used for a different request\n',
    });
  }
  // Without a key the rerun is still what it was: 409 user_exists, exit 1.
  expect((await create()).code).toBe(1);

  expect(await rowCounts(database.pool)).toEqual(before);
  expect((await database.pool.query(`select count(*)::int as n from audit_log`)).rows).toEqual(
    audited.rows,
  );
  const { rows } = await database.pool.query<{ id: string }>(
    `select id::text from users where telegram_id = '7001'`,
  );
  expect(rows).toEqual([{ id: lost.json()['id'] }]);
});

test('users create with one --idempotency-key run several times at once makes one user', async () => {
  const runs = await Promise.all(
    Array.from({ length: 5 }, () =>
      lingxi('users', 'create', '--telegram-id', '7003', '--idempotency-key', 'c1', '--json'),
    ),
  );
  const ids = new Set<unknown>();
  for (const run of runs) {
    if (run.code === 0) ids.add(run.json()['id']);
    // A run that finds the first still running says so (exit 1); rerun it once that answered.
    else
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 1,
        stderr: expect.stringMatching(/still running/),
      });
  }
  const { rows } = await database.pool.query<{ id: string }>(
    `select id::text from users where telegram_id = '7003'`,
  );
  expect(rows).toHaveLength(1);
  expect([...ids]).toEqual([rows[0]!.id]);
  const rerun = await lingxi(
    'users',
    'create',
    '--telegram-id',
    '7003',
    '--idempotency-key',
    'c1',
    '--json',
  );
  expect(rerun.json()).toEqual({ id: rows[0]!.id });
});

test('keys create --idempotency-key: a rerun makes no second key and says the secret was shown once', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '7004', '--json')).json()[
    'id'
  ] as string;
  const args = ['keys', 'create', '--user', user, '--name', 'ci', '--models', 'a, b'];
  const first = await lingxi(...args, '--idempotency-key', 'k1', '--json');
  expect(first.json()).toEqual({ id: expect.any(String), key: expect.stringMatching(/^lx-/) });
  const retry = await lingxi(...args, '--idempotency-key', 'k1', '--json');
  expect({ code: retry.code, stderr: retry.stderr }).toEqual({ code: 0, stderr: '' });
  expect(retry.json()).toEqual({
    id: first.json()['id'],
    key: null,
    keyShownOnce: 'the secret was shown in the first answer only',
  });
  const human = await lingxi(...args, '--idempotency-key', 'k1');
  expect(human.stdout).toMatch(/earlier run with this --idempotency-key.*revoke the key/);
  const renamed = await lingxi(...args.slice(0, 5), 'other', '--idempotency-key', 'k1');
  expect({ code: renamed.code, stderr: renamed.stderr }).toEqual({
    code: 1,
    stderr: 'lingxi: this --idempotency-key was used for a different request\n',
  });
  const { rows } = await database.pool.query(`select id::text from api_keys where user_id = $1`, [
    user,
  ]);
  expect(rows).toEqual([{ id: first.json()['id'] }]);
});

test('credit --idempotency-key with another amount is refused (exit 1), the first credit stands', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '7005', '--json')).json()[
    'id'
  ] as string;
  const credit = (amount: string) =>
    lingxi(
      'credit',
      '--user',
      user,
      '--amount',
      amount,
      '--reason',
      'promo',
      '--idempotency-key',
      'p1',
    );
  expect((await credit('5')).code).toBe(0);
  const other = await credit('6');
  expect(other.code).toBe(1);
  expect(other.stderr).toMatch(
    /^lingxi: idempotency key "adjustment:p1" was already used for a different request\n$/,
  );
  expect((await lingxi('balance', '--user', user, '--json')).json()).toMatchObject({ posted: '5' });
});

test('deposits list --after pages through every deposit once, newest first, while new ones arrive', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '7006', '--json')).json()[
    'id'
  ] as string;
  let tx = 0;
  const deposit = async (network = 'ethereum') => {
    tx += 1;
    const { rows } = await database.pool.query<{ id: string }>(
      `insert into deposits (network, tx_hash, log_index, user_id, address, from_address,
         amount_base_units, amount, asset, block_number, block_hash, status, confirmations_required)
       values ($1, $2, 0, $3, '0xaddr', '0xfrom', 1000000, 1, 'USDT', $4, '0xblock', 'credited', '12')
       returning id::text`,
      [network, `0x${tx.toString(16).padStart(64, '0')}`, user, tx],
    );
    return rows[0]!.id;
  };
  const first: string[] = [];
  for (let i = 0; i < 7; i++) first.push(await deposit(i % 3 === 0 ? 'tron' : 'ethereum'));
  type Page = { data: Array<{ id: string; network: string }>; nextCursor: string | null };
  const page = async (...args: string[]) => {
    const run = await lingxi('deposits', 'list', '--user', user, '--limit', '3', ...args, '--json');
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    return run.json() as unknown as Page;
  };

  const seen: string[] = [];
  let current = await page();
  const arrived: string[] = [];
  for (;;) {
    seen.push(...current.data.map((d) => d.id));
    if (current.nextCursor === null) break;
    // Deposits arrive between pages.
    arrived.push(await deposit(), await deposit());
    current = await page('--after', current.nextCursor);
  }
  expect(seen).toEqual([...first].reverse());
  // A fresh listing starts with what arrived meanwhile, newest first.
  expect((await page()).data.map((d) => d.id)).toEqual([...arrived].reverse().slice(0, 3));

  // With --network, the same cursor pages within the filter.
  const tron = await page('--network', 'tron', '--limit', '2');
  expect(tron.data.map((d) => d.id)).toEqual([first[6], first[3]]);
  const tronRest = await page('--network', 'tron', '--limit', '2', '--after', tron.nextCursor!);
  expect(tronRest).toMatchObject({ data: [{ id: first[0] }], nextCursor: null });

  // The human listing says how to go on.
  const human = await lingxi('deposits', 'list', '--user', user, '--limit', '2');
  expect(human.stdout).toMatch(/\nmore: lingxi deposits list --after \d+\n$/);
});

test('deposits list: a cursor that is not one is bad usage (exit 2), like a bad --limit', async () => {
  for (const cursor of ['abc', '-1', '', '1.5', '99999999999999999999', 'eyJpZCI6MX0']) {
    const result = await lingxi('deposits', 'list', '--after', cursor, '--json');
    expect({ cursor, code: result.code, stdout: result.stdout }).toEqual({
      cursor,
      code: 2,
      stdout: '',
    });
    expect(result.stderr).toMatch(/^lingxi: --after \S*: not a cursor this command printed/);
  }
});

test('deposits list --network: a name neither in the config nor on any deposit is bad usage (exit 2), not an empty list', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'lingxi-cli-')), 'lingxi.config.json');
  writeFileSync(
    file,
    JSON.stringify({
      database: { url: database.url },
      networks: [
        {
          kind: 'evm',
          name: 'ethereum',
          chainId: 1,
          rpcUrls: ['http://127.0.0.1:9'],
          confirmations: 12,
          assets: [{ symbol: 'USDT', contract: USDT_ETHEREUM, decimals: 6, price: { fixed: '1' } }],
        },
      ],
    }),
  );
  const unknown = await runLingxi(file, ['deposits', 'list', '--network', 'etherum', '--json']);
  expect({ code: unknown.code, stdout: unknown.stdout, stderr: unknown.stderr }).toEqual({
    code: 2,
    stdout: '',
    stderr:
      'lingxi: --network etherum: no network of that name in the config (ethereum), nor any deposit on one\n',
  });
  // A configured network with no deposits yet lists nothing, as before.
  const configured = await runLingxi(file, ['deposits', 'list', '--network', 'ethereum', '--json']);
  expect(configured.code).toBe(0);
  // A network taken out of the config still lists the deposits it had.
  const user = (await lingxi('users', 'create', '--telegram-id', '7020', '--json')).json()[
    'id'
  ] as string;
  await database.pool.query(
    `insert into deposits (network, tx_hash, log_index, user_id, address, from_address,
       amount_base_units, amount, asset, block_number, block_hash, status, confirmations_required)
     values ('bsc-old', $1, 0, $2, '0xaddr', '0xfrom', 1000000, 1, 'USDT', 1, '0xblock', 'credited', '12')`,
    [`0x${'b'.repeat(64)}`, user],
  );
  const removed = await runLingxi(file, ['deposits', 'list', '--network', 'bsc-old', '--json']);
  expect(removed.code).toBe(0);
  expect(removed.json()).toMatchObject({ data: [{ network: 'bsc-old', asset: 'USDT' }] });
});

test('users create --idempotency-key after a run that failed, or died before it committed, does the work once', async () => {
  // A run that failed (409 user_exists) wrote nothing and gives its key back.
  const exists = await lingxi(
    'users',
    'create',
    '--telegram-id',
    '7001',
    '--idempotency-key',
    'f1',
  );
  expect(exists.code).toBe(1);
  const created = await lingxi(
    'users',
    'create',
    '--telegram-id',
    '7008',
    '--idempotency-key',
    'f1',
    '--json',
  );
  expect(created.code).toBe(0);

  // A run killed between claiming its key and committing leaves the claim unanswered: a rerun
  // is refused while the claim is fresh, and does the work once the lease has run out.
  const hash = createHash('sha256')
    .update('CLI lingxi users create\n{"telegramId":"7009","username":"dora"}')
    .digest('hex');
  await database.pool.query(
    `insert into http_idempotency (key, method, path, request_hash) values ('cli:d1', 'CLI', 'lingxi users create', $1)`,
    [hash],
  );
  const args = ['users', 'create', '--telegram-id', '7009', '--username', 'dora'];
  const early = await lingxi(...args, '--idempotency-key', 'd1');
  expect({ code: early.code, stderr: early.stderr }).toEqual({
    code: 1,
    stderr:
      'lingxi: a request with this --idempotency-key is still running; retry once it has answered\n',
  });
  await database.pool.query(
    `update http_idempotency set created_at = now() - interval '1 hour' where key = 'cli:d1'`,
  );
  const late = await lingxi(...args, '--idempotency-key', 'd1', '--json');
  expect(late.code).toBe(0);
  expect((await lingxi(...args, '--idempotency-key', 'd1', '--json')).json()).toEqual(late.json());
  const { rows } = await database.pool.query(
    `select id::text from users where telegram_id = '7009'`,
  );
  expect(rows).toEqual([{ id: late.json()['id'] }]);
});

test('keys list and keys revoke: a leaked key revoked from a shell, once, audited once; revoking it again changes nothing', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '7101', '--json')).json()[
    'id'
  ] as string;
  const laptop = (
    await lingxi('keys', 'create', '--user', user, '--name', 'laptop', '--json')
  ).json();
  const ci = (
    await lingxi(
      'keys',
      'create',
      '--user',
      user,
      '--name',
      'ci',
      '--spend-limit',
      '5',
      '--models',
      'm1',
      '--json',
    )
  ).json();

  const listed = await lingxi('keys', 'list', '--user', user, '--json');
  expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: '' });
  const key = (id: unknown, name: string, more: Record<string, unknown> = {}) => ({
    id,
    name,
    prefix: expect.stringMatching(/^lx-/),
    spendLimitUsd: null,
    spentUsd: '0',
    allowedModels: null,
    createdAt: expect.any(String),
    lastUsedAt: null,
    revokedAt: null,
    ...more,
  });
  expect(listed.json()).toEqual({
    data: [
      key(ci['id'], 'ci', { spendLimitUsd: '5', allowedModels: ['m1'] }),
      key(laptop['id'], 'laptop'),
    ],
  });
  // Never a secret or its hash.
  expect(listed.stdout).not.toContain(laptop['key'] as string);
  expect(listed.stdout).not.toMatch(/[0-9a-f]{64}/);
  const human = await lingxi('keys', 'list', '--user', user);
  expect(human.stdout).toContain(laptop['id'] as string);
  expect(human.stdout).toMatch(/laptop .* no limit +all/);
  expect(human.stdout).toMatch(/ci .* 0 of 5 +m1/);
  expect(human.stdout).not.toContain(laptop['key'] as string);

  const revoked = await lingxi(
    'keys',
    'revoke',
    laptop['id'] as string,
    '--reason',
    'leaked in a paste',
    '--json',
  );
  expect({ code: revoked.code, stderr: revoked.stderr }).toEqual({ code: 0, stderr: '' });
  expect(revoked.json()).toEqual({
    id: laptop['id'],
    revokedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    alreadyRevoked: false,
  });

  // Again, with or without --user: exit 0, the first revocation's time, nothing written.
  const again = await lingxi('keys', 'revoke', laptop['id'] as string, '--user', user, '--json');
  expect({ code: again.code, stderr: again.stderr }).toEqual({ code: 0, stderr: '' });
  expect(again.json()).toEqual({ ...revoked.json(), alreadyRevoked: true });
  const againHuman = await lingxi('keys', 'revoke', laptop['id'] as string);
  expect(againHuman.code).toBe(0);
  expect(againHuman.stdout).toBe(
    `key ${String(laptop['id'])} of user ${user} was already revoked at ${String(revoked.json()['revokedAt'])}; nothing changed\n`,
  );

  const { rows: audit } = await database.pool.query(
    `select actor, action, target, details from audit_log where action = 'key.revoke' and target = $1`,
    [`user:${user}`],
  );
  expect(audit).toEqual([
    {
      actor: expect.stringMatching(/^cli:/),
      action: 'key.revoke',
      target: `user:${user}`,
      details: { keyId: laptop['id'], reason: 'leaked in a paste' },
    },
  ]);
  expect(
    (
      (await lingxi('keys', 'list', '--user', user, '--json')).json()['data'] as Array<{
        id: string;
        revokedAt: string | null;
      }>
    ).map((k) => [k.id, k.revokedAt]),
  ).toEqual([
    [ci['id'], null],
    [laptop['id'], revoked.json()['revokedAt']],
  ]);
});

test('keys revoke: an unknown key, or a key of another user, is refused (exit 1, one line), nothing written', async () => {
  const owner = (await lingxi('users', 'create', '--telegram-id', '7102', '--json')).json()[
    'id'
  ] as string;
  const other = (await lingxi('users', 'create', '--telegram-id', '7103', '--json')).json()[
    'id'
  ] as string;
  const key = (await lingxi('keys', 'create', '--user', owner, '--json')).json()['id'] as string;
  const unknown = '01890a5d-ac96-774b-bcce-b302099a8057';
  const before = await rowCounts(database.pool);
  const audits = async () =>
    (await database.pool.query(`select count(*)::int as n from audit_log`)).rows[0] as {
      n: number;
    };
  const auditsBefore = await audits();
  for (const [args, stderr] of [
    [[unknown], `lingxi: no key ${unknown}; nothing revoked\n`],
    [[unknown, '--user', owner], `lingxi: no key ${unknown} of user ${owner}; nothing revoked\n`],
    [[key, '--user', other], `lingxi: no key ${key} of user ${other}; nothing revoked\n`],
    [[key, '--user', '99999999'], 'lingxi: user 99999999 does not exist; nothing revoked\n'],
  ] as const) {
    const result = await lingxi('keys', 'revoke', ...args, '--json');
    expect({ args, code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({
      args,
      code: 1,
      stdout: '',
      stderr,
    });
  }
  expect(await rowCounts(database.pool)).toEqual(before);
  expect(await audits()).toEqual(auditsBefore);
});

test('keys list and keys revoke: an id that is not one is bad usage (exit 2, one line), nothing written', async () => {
  const user = (await lingxi('users', 'create', '--telegram-id', '7104', '--json')).json()[
    'id'
  ] as string;
  const key = (await lingxi('keys', 'create', '--user', user, '--json')).json()['id'] as string;
  const before = await rowCounts(database.pool);
  for (const args of [
    ['list', '--user', 'abc'],
    ['list', '--user', '-1'],
    ['list', '--user', '1.5'],
    ['list', '--user', '9999999999999999999'],
    ['revoke', 'nope'],
    ['revoke', '42'],
    ['revoke', '0'.repeat(36)],
    ['revoke', `${key}0`],
    ['revoke', key, '--user', 'abc'],
    ['revoke', key, '--user', `${user}.0`],
    ['revoke', key, '--reason', ' '],
    ['revoke', key, '--reason', 'x'.repeat(501)],
  ]) {
    const result = await lingxi('keys', ...args);
    expect({ args, code: result.code, stdout: result.stdout }).toEqual({
      args,
      code: 2,
      stdout: '',
    });
    expect(result.stderr).toMatch(/^lingxi: [^\n]+\n$/);
  }
  for (const args of [['list'], ['revoke']]) {
    const result = await lingxi('keys', ...args);
    expect({ args, code: result.code, stdout: result.stdout }).toEqual({
      args,
      code: 2,
      stdout: '',
    });
  }
  expect(await rowCounts(database.pool)).toEqual(before);
});

test('`lingxi --version` prints the package version and exits 0, in-process and through bin/lingxi.js', async () => {
  const { version } = JSON.parse(
    readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
  ) as {
    version: string;
  };
  let stdout = '';
  const code = await runCli(['--version'], {
    stdout: (text) => (stdout += text),
    stderr: () => {},
  });
  expect({ code, stdout }).toEqual({ code: 0, stdout: `${version}\n` });
  const bin = fileURLToPath(new URL('../bin/lingxi.js', import.meta.url));
  const { stdout: printed } = await promisify(execFile)(process.execPath, [bin, '-V']);
  expect(printed).toBe(`${version}\n`);
});
