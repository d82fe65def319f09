import { Writable } from 'node:stream';
import { Kysely, PostgresDialect, sql, type Selectable } from 'kysely';
import pino from 'pino';
import { afterAll, expect, test } from 'vitest';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { parseConfig } from '../../src/config/load.js';
import type { Database } from '../../src/db/schema.js';
import { getDepositAddresses } from '../../src/deposits/deposits.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { waitFor } from '../support/poll.js';

const xpubs = mnemonicToAccountXpubs('test test test test test test test test test test test junk');
/** Another wallet's keys: what a config pointing at the wrong wallet has. */
const otherXpubs = mnemonicToAccountXpubs(
  'legal winner thank year wave sausage worth useful legal winner thank yellow',
);
const databases: TestDatabase[] = [];

afterAll(async () => {
  await Promise.all(databases.map((d) => d.drop()));
});

function configWith(wallets: object) {
  const native = (symbol: string, decimals: number) => [
    { symbol, native: true, decimals, price: { fixed: '1' } },
  ];
  return parseConfig({
    wallets,
    networks: [
      {
        kind: 'evm',
        name: 'ethereum',
        chainId: 1,
        rpcUrls: ['http://127.0.0.1:9'],
        confirmations: 3,
        assets: native('ETH', 18),
      },
      {
        kind: 'evm',
        name: 'base',
        chainId: 8453,
        rpcUrls: ['http://127.0.0.1:9'],
        confirmations: 3,
        assets: native('ETH', 18),
      },
      {
        kind: 'tron',
        name: 'tron',
        fullHost: 'http://127.0.0.1:9',
        confirmations: 'solidified',
        assets: native('TRX', 6),
      },
    ],
  });
}
const config = configWith(xpubs);

/** A fresh database and `pools` Kysely instances over it, each on a pool of its own. */
async function freshDatabase(pools: number): Promise<{
  dbs: Array<Kysely<Database>>;
  rows: () => Promise<Array<Selectable<WatcherTables['deposit_addresses']>>>;
  newUsers: (count: number) => Promise<string[]>;
}> {
  const database = await createTestDatabase();
  databases.push(database);
  const dbs = Array.from({ length: pools }, () => {
    const pool = database.newPool(10);
    // A connection a test terminates fails its query; it must not also crash the run.
    pool.on('connect', (client) => client.on('error', () => {}));
    return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  });
  let next = 0;
  return {
    dbs,
    rows: () =>
      (dbs[0] as unknown as Kysely<WatcherTables>)
        .selectFrom('deposit_addresses')
        .selectAll()
        .orderBy('family')
        .orderBy('derivation_index')
        .execute(),
    async newUsers(count) {
      const first = next;
      next += count;
      const { rows } = await sql<{ id: string }>`
        insert into users (telegram_id) select 9100000 + g from generate_series(${first + 1}::int, ${first + count}::int) g
        returning id`.execute(dbs[0]!);
      return rows.map((r) => r.id);
    },
  };
}

function logSink() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

test('many first requests at once, from two pools: one address per user and family, never one address for two users', async () => {
  const { dbs, rows, newUsers } = await freshDatabase(2);
  const users = await newUsers(20);
  // Every user asks 6 times at once, 3 on each pool: 120 first requests in flight.
  const answers = await Promise.all(
    users.flatMap((userId) =>
      Array.from({ length: 6 }, (_, i) =>
        getDepositAddresses(dbs[i % 2]!, config, userId).then((views) => ({ userId, views })),
      ),
    ),
  );
  const byUser = new Map<string, Set<string>>();
  for (const { userId, views } of answers) {
    expect(views.map((v) => v.unavailable)).toEqual([null, null, null]);
    expect(views[0]!.address).toBe(views[1]!.address);
    const seen = byUser.get(userId) ?? new Set<string>();
    seen.add(`${views[0]!.address}|${views[2]!.address}`);
    byUser.set(userId, seen);
  }
  for (const [userId, seen] of byUser) expect([...seen], `user ${userId}`).toHaveLength(1);
  const stored = await rows();
  expect(stored).toHaveLength(users.length * 2);
  for (const row of stored) {
    const derived =
      row.family === 'evm'
        ? deriveEvmAddress(xpubs.evmXpub, row.derivation_index).address.toLowerCase()
        : deriveTronAddress(xpubs.tronXpub, row.derivation_index).address;
    expect(row.address).toBe(derived);
  }
  for (const family of ['evm', 'tron']) {
    const ofFamily = stored.filter((r) => r.family === family);
    expect(new Set(ofFamily.map((r) => r.address)).size, family).toBe(users.length);
    // No index lost to a request that lost the race: 20 users, indexes 0 to 19, no gap a
    // wallet restored from the mnemonic would stop scanning at.
    expect(
      ofFamily.map((r) => r.derivation_index),
      family,
    ).toEqual(Array.from({ length: users.length }, (_, i) => i));
  }
});

test('a deposit xpub that does not parse takes no index: the first address after the fix is index 0', async () => {
  const { dbs, rows, newUsers } = await freshDatabase(1);
  const [alice] = await newUsers(1);
  const evmXpub = `${xpubs.evmXpub.slice(0, -1)}x`;
  // Loading a config refuses it, naming the field; a config built in code can still carry it.
  expect(() => configWith({ evmXpub, tronXpub: xpubs.tronXpub })).toThrow(
    /^config wallets\.evmXpub: the EVM extended public key is not a Base58Check/,
  );
  const broken = { ...config, wallets: { ...config.wallets, evmXpub } };
  for (let attempt = 0; attempt < 5; attempt += 1) {
    // Its networks are unavailable, saying why; the other family's are served all the same.
    const views = await getDepositAddresses(dbs[0]!, broken, alice!);
    expect(views.map((v) => [v.network, v.unavailable?.code ?? v.derivationPath])).toEqual([
      ['ethereum', 'deposit_key_invalid'],
      ['base', 'deposit_key_invalid'],
      ['tron', "m/44'/195'/0'/0/0"],
    ]);
  }
  expect((await rows()).map((r) => r.family)).toEqual(['tron']);
  const views = await getDepositAddresses(dbs[0]!, config, alice!);
  expect(views.map((v) => v.derivationPath)).toEqual([
    "m/44'/60'/0'/0/0",
    "m/44'/60'/0'/0/0",
    "m/44'/195'/0'/0/0",
  ]);
});

test('an xpub changed between restarts is caught before an address under it is handed out; listed as retired, the new key is used', async () => {
  const { dbs, rows, newUsers } = await freshDatabase(1);
  const db = dbs[0]!;
  const [alice, bob, carol] = await newUsers(3);
  const before = await getDepositAddresses(db, config, alice!);
  expect(before[0]!.address).toBe(deriveEvmAddress(xpubs.evmXpub, 0).address.toLowerCase());

  // Restarted with another wallet's EVM xpub (the Tron one unchanged).
  const changed = configWith({ evmXpub: otherXpubs.evmXpub, tronXpub: xpubs.tronXpub });
  const { logger, lines } = logSink();
  const views = await getDepositAddresses(db, changed, bob!, { logger });
  expect(views.map((v) => [v.network, v.address, v.unavailable?.code ?? null])).toEqual([
    ['ethereum', null, 'deposit_key_mismatch'],
    ['base', null, 'deposit_key_mismatch'],
    ['tron', deriveTronAddress(xpubs.tronXpub, 1).address, null],
  ]);
  // What a user reads names no one else's address; the operator's log does.
  expect(JSON.stringify(views)).not.toContain(before[0]!.address);
  const logged = lines.find((l) => l['code'] === 'deposit_key_mismatch');
  expect(logged?.['level']).toBe(50);
  expect(String(logged?.['msg'])).toContain(`${before[0]!.address}, index 0`);
  expect(String(logged?.['msg'])).toContain('wallets.retiredXpubs');
  // Nothing was assigned under the unknown key; the address already given stays served.
  expect((await rows()).filter((r) => r.family === 'evm').map((r) => r.user_id)).toEqual([alice]);
  expect((await getDepositAddresses(db, changed, alice!))[0]!.address).toBe(before[0]!.address);

  // Rotated on purpose: the previous key listed as retired. New users get the new key's
  // address at the next index; the old users keep theirs.
  const rotated = configWith({
    evmXpub: otherXpubs.evmXpub,
    tronXpub: xpubs.tronXpub,
    retiredXpubs: [xpubs.evmXpub],
  });
  const after = await getDepositAddresses(db, rotated, bob!);
  expect(after[0]!.unavailable).toBeNull();
  const bobRow = (await rows()).find((r) => r.family === 'evm' && r.user_id === bob)!;
  expect(after[0]!.address).toBe(
    deriveEvmAddress(otherXpubs.evmXpub, bobRow.derivation_index).address.toLowerCase(),
  );
  // The last address now derives from the configured key: no retired list needed for more.
  expect((await getDepositAddresses(db, changed, carol!))[0]!.unavailable).toBeNull();
  // Going back to the old key without listing the new one is a change too.
  const [dave] = await newUsers(1);
  expect((await getDepositAddresses(db, config, dave!))[0]!.unavailable?.code).toBe(
    'deposit_key_mismatch',
  );
});

test('an assignment that dies before it commits leaves no gap: the next user gets the index it would have had', async () => {
  const { dbs, rows, newUsers } = await freshDatabase(2);
  const database = databases.at(-1)!;
  const [alice, bob, carol] = await newUsers(3);
  await getDepositAddresses(dbs[0]!, config, alice!); // evm 0, tron 0
  // Another transaction is writing index 1 (uncommitted): bob's assignment waits on it...
  const other = await database.pool.connect();
  try {
    await other.query('begin');
    await other.query(
      `insert into deposit_addresses (user_id, family, derivation_index, derivation_path, address)
       values ($1, 'evm', 1, 'm/x', 'in-flight')`,
      [carol],
    );
    const dying = getDepositAddresses(dbs[1]!, config, bob!);
    dying.catch(() => {});
    let pid: number | undefined;
    await waitFor('the assignment to wait on the index', async () => {
      const { rows: waiting } = await database.pool.query<{ pid: number }>(
        `select pid from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'
            and query like '%deposit_addresses%'`,
      );
      pid = waiting[0]?.pid;
      return pid !== undefined;
    });
    // ...and its process dies there (its connection goes; nothing of it commits).
    await database.pool.query('select pg_terminate_backend($1)', [pid]);
    await expect(dying).rejects.toThrow();
    await other.query('rollback');
  } finally {
    other.release();
  }
  // Carol is next: she gets index 1, not 2 (a wallet stops scanning 20 unused indexes past
  // the last used one: every gap brings that closer).
  await getDepositAddresses(dbs[0]!, config, carol!);
  await getDepositAddresses(dbs[0]!, config, bob!);
  expect(
    (await rows()).filter((r) => r.family === 'evm').map((r) => [r.user_id, r.derivation_index]),
  ).toEqual([
    [alice, 0],
    [carol, 1],
    [bob, 2],
  ]);
});
