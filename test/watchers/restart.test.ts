import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, PostgresDialect } from 'kysely';
import type { Address } from 'viem';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { assignDepositAddress } from '../../chain-watchers/pipeline/depositAddresses.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { Decimal } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { MAINNET_USDT } from '../support/tron-sim/chain.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';

/**
 * Real `lingxi watch` processes, killed with SIGKILL mid-backlog and restarted, and two of
 * them at once: every deposit is credited exactly once, whatever happens to the processes.
 */

const xpubs = mnemonicToAccountXpubs('test test test test test test test test test test test junk');
const USERS = 20;

/** A chain with a backlog of multi-transfer transactions to our users' addresses. */
interface Backlog {
  network: Record<string, unknown>;
  deposits: number;
  expectedTotal: Decimal;
  close(): Promise<void>;
}

async function evmBacklog(
  addresses: (family: 'evm' | 'tron') => Promise<string[]>,
): Promise<Backlog> {
  const devnet: Devnet = await startDevnet();
  const usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  const funder = devnet.account(0);
  await devnet.mint(usdt, funder.address, 10n ** 15n);
  const start = await devnet.blockNumber();
  const to = await addresses('evm');
  let expectedTotal = new Decimal(0);
  let deposits = 0;
  // 60 transactions of 5 transfers each, spread over ~240 blocks.
  for (let t = 0; t < 60; t += 1) {
    const transfers = Array.from({ length: 5 }, (_, k) => ({
      to: to[(t * 5 + k) % to.length] as Address,
      amountBaseUnits: BigInt(1_000_000 + t * 1000 + k),
    }));
    await devnet.transferTokenMany(usdt, funder, transfers);
    for (const transfer of transfers)
      expectedTotal = expectedTotal.add(
        new Decimal(transfer.amountBaseUnits.toString()).div(1_000_000),
      );
    deposits += transfers.length;
    await devnet.mine(3);
  }
  await devnet.mine(5);
  return {
    network: {
      kind: 'evm',
      name: 'devnet',
      chainId: 1337,
      rpcUrls: [devnet.url],
      confirmations: 2,
      startBlock: Number(start),
      assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
    },
    deposits,
    expectedTotal,
    close: () => devnet.close(),
  };
}

async function tronBacklog(
  addresses: (family: 'evm' | 'tron') => Promise<string[]>,
): Promise<Backlog> {
  const sim: TronSimulator = await startTronSimulator({ chainOptions: { solidityLag: 3 } });
  const sender = sim.chain.account('sender');
  sim.chain.mintToken(sim.chain.usdt, sender, 10n ** 15n);
  sim.chain.setTrxBalance(sender, 10n ** 12n);
  sim.chain.produceBlocks(1);
  const start = sim.chain.headNumber + 1;
  const to = await addresses('tron');
  let expectedTotal = new Decimal(0);
  let deposits = 0;
  for (let t = 0; t < 60; t += 1) {
    const transfers = Array.from({ length: 5 }, (_, k) => ({
      to: to[(t * 5 + k) % to.length]!,
      amount: BigInt(1_000_000 + t * 1000 + k),
    }));
    sim.chain.disperseToken({ token: sim.chain.usdt, from: sender, transfers });
    for (const transfer of transfers)
      expectedTotal = expectedTotal.add(new Decimal(transfer.amount.toString()).div(1_000_000));
    deposits += transfers.length;
    sim.chain.produceBlocks(3);
  }
  sim.chain.produceBlocks(6);
  return {
    network: {
      kind: 'tron',
      name: 'tron',
      fullHost: sim.url,
      confirmations: 'solidified',
      startBlock: start,
      assets: [{ symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } }],
    },
    deposits,
    expectedTotal,
    close: () => sim.close(),
  };
}

describe.each([
  { chain: 'EVM (ganache)', backlog: evmBacklog },
  { chain: 'Tron (TronGrid simulator)', backlog: tronBacklog },
])('$chain', ({ backlog: makeBacklog }) => {
  let database: TestDatabase;
  let configFile: string;
  let backlog: Backlog;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    const db = new Kysely<WatcherTables>({
      dialect: new PostgresDialect({ pool: database.newPool(2) }),
    });
    const users: string[] = [];
    for (let i = 0; i < USERS; i += 1) {
      const { rows } = await database.pool.query<{ id: string }>(
        'insert into users (telegram_id) values ($1) returning id',
        [7000 + i],
      );
      users.push(rows[0]!.id);
    }
    backlog = await makeBacklog(async (family) => {
      const out: string[] = [];
      for (const userId of users)
        out.push((await assignDepositAddress(db, { userId, family, xpubs })).address);
      return out;
    });
    await db.destroy();
    configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-watch-')), 'lingxi.config.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        database: { url: database.url, poolSize: 4 },
        log: { level: 'info' },
        networks: [
          { ...backlog.network, pollIntervalMs: 50, maxBlockRange: 10, rpcTimeoutMs: 3000 },
        ],
      }),
    );
  });
  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await database?.drop();
    await backlog?.close();
  });

  interface Watcher {
    child: ChildProcess;
    log: string[];
  }

  function startWatcher(): Watcher {
    const child = spawn(process.execPath, ['bin/lingxi.js', 'watch', '--config', configFile], {
      env: { ...process.env, LINGXI_FROM_SOURCE: '1', DATABASE_URL: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    const log: string[] = [];
    child.stderr!.on('data', (chunk: Buffer) =>
      log.push(...chunk.toString().split('\n').filter(Boolean)),
    );
    return { child, log };
  }

  async function credited(): Promise<number> {
    const { rows } = await database.pool.query<{ n: number }>(
      `select count(*)::int as n from deposits where status = 'credited'`,
    );
    return rows[0]!.n;
  }

  async function until(
    condition: () => Promise<boolean> | boolean,
    timeoutMs: number,
    what: string,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async function kill(watcher: Watcher): Promise<void> {
    const exited = new Promise((resolve) => watcher.child.once('exit', resolve));
    watcher.child.kill('SIGKILL');
    await exited;
  }

  test('two watchers at once: one is active, the other stands by and takes over when the first is killed mid-backlog', async () => {
    // The test holds the network's watcher lock until both processes are up and standing
    // by: otherwise one that starts seconds after the other (a loaded machine) could find
    // the whole backlog credited already, and nothing would be left to take over.
    const gate = await database.pool.connect();
    await gate.query('select pg_advisory_lock(hashtext($1))', [
      `lingxi:watcher:${String(backlog.network['name'])}`,
    ]);
    const first = startWatcher();
    const second = startWatcher();
    try {
      await until(
        () => [first, second].every((w) => w.log.some((l) => l.includes('standing by'))),
        60_000,
        'both watchers to stand by',
      );
    } finally {
      await gate.query('select pg_advisory_unlock_all()');
      gate.release();
    }
    await until(async () => (await credited()) > 20, 60_000, 'the first credits');
    await until(
      () => [first, second].some((w) => w.log.some((l) => l.includes('watcher active'))),
      30_000,
      'an active watcher',
    );
    const active = first.log.some((l) => l.includes('watcher active')) ? first : second;
    const standby = active === first ? second : first;
    expect(standby.log.some((l) => l.includes('standing by'))).toBe(true);
    expect(standby.log.some((l) => l.includes('watcher active'))).toBe(false);

    await kill(active);
    const atKill = await credited();
    expect(atKill).toBeLessThan(backlog.deposits);
    await until(
      () => standby.log.some((l) => l.includes('watcher active')),
      30_000,
      'the standby to take over',
    );

    // Kill the new active one too, mid-way, and start a fresh process.
    await until(async () => (await credited()) > atKill, 30_000, 'progress after the takeover');
    await kill(standby);
    const third = startWatcher();
    await until(
      async () => (await credited()) === backlog.deposits,
      90_000,
      'every deposit to be credited',
    );
    await kill(third);

    const { rows } = await database.pool.query(`
      select (select count(*)::int from deposits) as deposits,
             (select count(*)::int from deposits where status = 'credited') as credited,
             (select count(*)::int from ledger_entries where kind = 'deposit') as entries,
             (select count(distinct entry_id)::int from deposits) as distinct_entries,
             (select coalesce(sum(credits_posted - debits_posted), 0)::text from ledger_accounts where code like 'liabilities:customers:%') as balances`);
    expect(rows[0]).toEqual({
      deposits: backlog.deposits,
      credited: backlog.deposits,
      entries: backlog.deposits,
      distinct_entries: backlog.deposits,
      balances: expect.any(String),
    });
    expect(new Decimal(rows[0].balances).toString()).toBe(backlog.expectedTotal.toString());
  }, 240_000);
});
