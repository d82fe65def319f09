import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Address } from 'viem';
import { Kysely, PostgresDialect } from 'kysely';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { networkSchema, type EvmNetworkConfig } from '../../chain-watchers/config.js';
import { createEvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { assignDepositAddress } from '../../chain-watchers/pipeline/depositAddresses.js';
import { createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';

const MNEMONIC = 'test test test test test test test test test test test junk';
const xpubs = mnemonicToAccountXpubs(MNEMONIC);
/** 10^18 wei. */
const ETH = 10n ** 18n;

let devnet: Devnet;
let database: TestDatabase;
let ledger: PostgresLedger;
let db: Kysely<WatcherTables>;
let usdt: Address;
let carol: { id: string; address: Address };

/** What the watcher logged at warn level, in order. */
const warnings: Array<{ details: Record<string, unknown>; message: string }> = [];
const logger = {
  debug() {},
  info() {},
  warn(details: object, message: string) {
    warnings.push({ details: details as Record<string, unknown>, message });
  },
  error() {},
};

function watcher(feed: Address, maxAgeS = 100_000) {
  const config = networkSchema.parse({
    kind: 'evm',
    name: 'devnet',
    chainId: 1337,
    rpcUrls: [devnet.url],
    confirmations: 3,
    pollIntervalMs: 100,
    rpcTimeoutMs: 2000,
    rpcRetries: 1,
    startBlock: 1,
    assets: [
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
      {
        symbol: 'ETH',
        native: true,
        decimals: 18,
        price: { chainlink: { network: 'devnet', feed, maxAgeS } },
      },
    ],
  }) as EvmNetworkConfig;
  const adapter = createEvmAdapter(config, { logger });
  return new DepositWatcher({
    network: config,
    adapter,
    ledger,
    pool: database.pool,
    priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
    logger,
  });
}

async function deposit(txHash: string) {
  const { rows } = await database.pool.query(
    `select asset, status, amount::text, amount_usd::text, rate::text, rate_details, entry_id, reversal_entry_id
       from deposits where tx_hash = $1`,
    [txHash],
  );
  return rows[0];
}

async function usdBalance(userId: string): Promise<string> {
  const balance = await ledger.getBalance(`liabilities:customers:${userId}`).catch(() => null);
  return (balance?.posted ?? new Decimal(0)).toString();
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 3 });
  database = await createTestDatabase();
  ledger = await openLedger(database.pool, {});
  await ledger.init();
  db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: database.newPool(2) }) });
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 1_000_000_000_000n);
  const { rows } = await database.pool.query<{ id: string }>(
    'insert into users (telegram_id) values (7001) returning id',
  );
  const id = rows[0]!.id;
  const { address } = await assignDepositAddress(db, { userId: id, family: 'evm', xpubs });
  carol = { id, address: address as Address };
});

afterAll(async () => {
  await db?.destroy();
  await ledger?.close();
  await database?.drop();
  await devnet?.close();
});

describe('the USD rate a crypto deposit is credited at', () => {
  test('ETH is priced at the round current at its confirming block (its block + confirmations - 1), not at the block it was mined in', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp()); // 3000
    const w = watcher(feed);
    await w.runOnce();

    const sent = await devnet.sendEth(devnet.account(0), carol.address, ETH / 4n); // block B
    const repriced = await devnet.setRound(feed, 310_000_000_000n, await devnet.blockTimestamp()); // B+1: 3100
    await devnet.mine(1); // B+2: the third confirmation
    expect(repriced.blockNumber).toBe(sent.blockNumber + 1n);
    await w.runOnce();

    const row = await deposit(sent.txHash);
    expect(row.status).toBe('credited');
    expect(row.rate).toBe('3100');
    expect(row.amount_usd).toBe('775');
    expect(row.rate_details).toMatchObject({
      roundId: '2',
      blockNumber: (sent.blockNumber + 2n).toString(),
    });
    // A watcher restarted afterwards, with the feed moved on again, leaves it as it was.
    await devnet.setRound(feed, 500_000_000_000n, await devnet.blockTimestamp());
    await devnet.mine(3);
    await watcher(feed).runOnce();
    expect((await deposit(sent.txHash)).amount_usd).toBe('775');
    expect(await usdBalance(carol.id)).toBe('775');
  });

  test('a stale feed holds back only the ETH deposits: USDT beside them is credited and the watcher moves on; once the feed is updated, ETH is credited at the new round', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    await devnet.mine(1, { increaseTimeS: 7_200 }); // the round is 2 hours old: stale at 3600 s
    const w = watcher(feed, 3_600);
    await w.runOnce();
    const before = new Decimal(await usdBalance(carol.id));
    warnings.length = 0;

    const eth = await devnet.sendEth(devnet.account(0), carol.address, ETH / 10n);
    const tether = await devnet.transferToken(usdt, devnet.account(0), carol.address, 20_000_000n);
    await devnet.mine(3);
    const report = await w.runOnce();

    expect(report.credited).toBe(1);
    expect(report.awaitingPrice).toBe(1);
    expect(report.caughtUp).toBe(true);
    expect((await deposit(tether.txHash)).status).toBe('credited');
    expect((await deposit(eth.txHash)).status).toBe('seen'); // recorded, confirmed, not credited
    expect(await usdBalance(carol.id)).toBe(before.add(20).toString());
    const warned = warnings.find((w) => w.message.startsWith('price unavailable'));
    expect(warned?.details).toMatchObject({ network: 'devnet', asset: 'ETH' });
    expect(String(warned?.details['reason'])).toMatch(/s old at block \d+; at most 3600 s/);

    // Still stale: still waiting, never credited at the stale round.
    await devnet.mine(2);
    expect((await w.runOnce()).awaitingPrice).toBe(1);
    expect((await deposit(eth.txHash)).status).toBe('confirming');

    // The feed is updated: the next iteration credits it at the new round, and says on the entry
    // that its confirming block's round was refused.
    const updated = await devnet.setRound(feed, 320_000_000_000n, await devnet.blockTimestamp());
    const next = await w.runOnce();
    expect(next.awaitingPrice).toBe(0);
    const row = await deposit(eth.txHash);
    expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3200', '320']);
    expect(row.rate_details).toMatchObject({
      roundId: '2',
      blockNumber: updated.blockNumber.toString(),
      confirmingBlock: (eth.blockNumber + 2n).toString(),
    });
    expect(row.rate_details.refusedAtConfirmingBlock).toMatch(/s old at block/);
    expect(await usdBalance(carol.id)).toBe(before.add(20).add(320).toString());
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a reorg reverses exactly the USD a rounded ETH credit gave, not a re-pricing at the rate of the day', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 312_345_678_901n, await devnet.blockTimestamp());
    const w = watcher(feed);
    await w.runOnce();
    const before = await usdBalance(carol.id);
    const snapshot = await devnet.snapshot();

    // 0.123456789012345679 ETH x 3123.45678901: 26 fractional digits, rounded half-even to 18.
    const sent = await devnet.sendEth(devnet.account(0), carol.address, 123_456_789_012_345_679n);
    await devnet.mine(2);
    await w.runOnce();
    const credited = await deposit(sent.txHash);
    const exact = new Decimal('0.123456789012345679').mul('3123.45678901');
    const usd = exact.toDecimalPlaces(18, Decimal.ROUND_HALF_EVEN);
    expect(exact.decimalPlaces()).toBeGreaterThan(18);
    expect([credited.status, credited.amount_usd]).toEqual(['credited', usd.toString()]);
    const entry = await ledger.getEntry(credited.entry_id);
    expect(entry?.metadata['usdRoundingResidue']).toBe(exact.sub(usd).toString());

    // The deposit's block is reorged away; on the new branch the feed says something else.
    await devnet.revert(snapshot);
    await devnet.setRound(feed, 500_000_000_000n, await devnet.blockTimestamp());
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();

    const reversed = await deposit(sent.txHash);
    expect(reversed.status).toBe('reversed');
    const reversal = await ledger.getEntry(reversed.reversal_entry_id);
    expect(reversal?.postings.map((p) => [p.account, p.amount.toString()])).toEqual([
      [`assets:custody:devnet:ETH:${carol.address}`, '-0.123456789012345679'],
      ['equity:trading:ETH', '0.123456789012345679'],
      ['equity:trading:USD', usd.neg().toString()],
      [`liabilities:customers:${carol.id}`, usd.toString()],
    ]);
    expect(await usdBalance(carol.id)).toBe(before);
    expect(await ledger.checkBalances()).toEqual([]);
  });
});
