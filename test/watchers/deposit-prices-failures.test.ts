import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { Address } from 'viem';
import { Kysely, PostgresDialect } from 'kysely';
import type { PostgresLedger } from '../../ledger/index.js';
import { networkSchema, type EvmNetworkConfig } from '../../chain-watchers/config.js';
import { createEvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { assignDepositAddress } from '../../chain-watchers/pipeline/depositAddresses.js';
import { createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import {
  ethCallTo,
  startFlakyRpcProxy,
  type FlakyRpcProxy,
  type RpcFault,
} from '../support/evm/flakyRpcProxy.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';

const MNEMONIC = 'test test test test test test test test test test test junk';
const xpubs = mnemonicToAccountXpubs(MNEMONIC);
/** 10^18 wei. */
const ETH = 10n ** 18n;
const MINUTE_MS = 60_000;

let devnet: Devnet;
let proxy: FlakyRpcProxy;
/** A second endpoint of the same devnet, for failover. */
let second: FlakyRpcProxy;
let database: TestDatabase;
let ledger: PostgresLedger;
let db: Kysely<WatcherTables>;
let dave: { id: string; address: Address };

/** What the watcher logged, in order. */
const logged: Array<{ level: string; details: Record<string, unknown>; message: string }> = [];
const record = (level: string) => (details: object, message: string) => {
  logged.push({ level, details: details as Record<string, unknown>, message });
};
const logger = {
  debug: record('debug'),
  info: record('info'),
  warn: record('warn'),
  error: record('error'),
};
const priceWarnings = () => logged.filter((l) => l.message.startsWith('price unavailable'));
const pricedLines = () => logged.filter((l) => l.message.startsWith('price available'));

/** The watcher's clock: moved by the test, never by waiting. */
let clockMs = 0;

/**
 * A watcher of the devnet through the flaky proxy (or the proxies given, in that order). No
 * retries: one failed request is one failed read on that endpoint, as when every endpoint of a
 * network hiccups at once.
 */
function watcher(feed: Address, maxAgeS = 100_000, rpcUrls = [proxy.url]) {
  const config = networkSchema.parse({
    kind: 'evm',
    name: 'devnet',
    chainId: 1337,
    rpcUrls,
    confirmations: 3,
    pollIntervalMs: 100,
    rpcTimeoutMs: 2000,
    rpcRetries: 0,
    startBlock: 1,
    assets: [
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
    nowMs: () => clockMs,
  });
}

async function deposit(txHash: string) {
  const { rows } = await database.pool.query(
    `select status, amount_usd::text, rate::text, rate_details from deposits where tx_hash = $1`,
    [txHash],
  );
  return rows[0];
}

beforeAll(async () => {
  devnet = await startDevnet({ accounts: 2 });
  proxy = await startFlakyRpcProxy(devnet.url);
  second = await startFlakyRpcProxy(devnet.url);
  database = await createTestDatabase();
  ledger = await openLedger(database.pool, {});
  await ledger.init();
  db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: database.newPool(2) }) });
  const { rows } = await database.pool.query<{ id: string }>(
    'insert into users (telegram_id) values (7002) returning id',
  );
  const id = rows[0]!.id;
  const { address } = await assignDepositAddress(db, { userId: id, family: 'evm', xpubs });
  dave = { id, address: address as Address };
});

beforeEach(() => {
  logged.length = 0;
});

afterAll(async () => {
  await db?.destroy();
  await ledger?.close();
  await database?.drop();
  await proxy?.close();
  await second?.close();
  await devnet?.close();
});

describe('an RPC hiccup while reading the feed at the confirming block', () => {
  test.each([
    ['an HTTP 503', { httpStatus: 503 }],
    ['a dropped connection', { dropConnection: true }],
  ] satisfies Array<[string, RpcFault]>)(
    'after %s the deposit waits and is credited at its confirming block’s round on the next iteration, not at the latest block’s',
    async (_, fault) => {
      const feed = await devnet.deployAggregator(8, 'ETH / USD');
      await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp()); // 3000
      const w = watcher(feed);
      await w.runOnce();

      const sent = await devnet.sendEth(devnet.account(0), dave.address, ETH / 2n); // block B
      await devnet.setRound(feed, 310_000_000_000n, await devnet.blockTimestamp()); // B+1: 3100
      await devnet.mine(1); // B+2: the confirming block
      await devnet.setRound(feed, 350_000_000_000n, await devnet.blockTimestamp()); // B+3: 3500
      proxy.failNext(ethCallTo(feed), fault);

      const first = await w.runOnce();
      expect(proxy.pendingFaults()).toBe(0);
      const waiting = await deposit(sent.txHash);
      expect([waiting.status, waiting.rate, first.awaitingPrice]).toEqual(['seen', null, 1]);
      expect(priceWarnings().map((l) => l.details)).toEqual([
        expect.objectContaining({
          network: 'devnet',
          asset: 'ETH',
          confirmingBlock: (sent.blockNumber + 2n).toString(),
          kind: 'unreachable',
        }),
      ]);

      const second = await w.runOnce();
      expect(second.awaitingPrice).toBe(0);
      const row = await deposit(sent.txHash);
      expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3100', '1550']);
      expect(row.rate_details).toMatchObject({
        roundId: '2',
        blockNumber: (sent.blockNumber + 2n).toString(),
      });
      expect(row.rate_details).not.toHaveProperty('refusedAtConfirmingBlock');
      expect(pricedLines().map((l) => l.details)).toEqual([
        expect.objectContaining({
          network: 'devnet',
          asset: 'ETH',
          depositBlocks: 1,
          rate: '3100',
        }),
      ]);
      expect(await ledger.checkBalances()).toEqual([]);
    },
  );

  test('a node without the state of the confirming block (pruned) is an answer: the deposit is priced at the latest block, as documented', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    const w = watcher(feed);
    await w.runOnce();

    const sent = await devnet.sendEth(devnet.account(0), dave.address, ETH / 4n);
    await devnet.mine(2);
    const latest = await devnet.setRound(feed, 360_000_000_000n, await devnet.blockTimestamp());
    proxy.failNext(ethCallTo(feed), {
      rpcError: {
        code: -32000,
        message:
          'missing trie node 288259a570829264e76b2c58d4369b5a94f086018dc4409d1d0131405c5d1975 (path )',
      },
    });

    const report = await w.runOnce();
    expect(proxy.pendingFaults()).toBe(0);
    expect(report.awaitingPrice).toBe(0);
    const row = await deposit(sent.txHash);
    expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3600', '900']);
    expect(row.rate_details).toMatchObject({
      blockNumber: latest.blockNumber.toString(),
      confirmingBlock: (sent.blockNumber + 2n).toString(),
    });
    expect(row.rate_details.refusedAtConfirmingBlock).toMatch(/missing trie node/);
    expect(priceWarnings()).toEqual([]);
  });
});

describe('a feed read that fails on one endpoint of two', () => {
  test('a JSON-RPC "internal error" (-32603) is that endpoint failing, not the feed reverting: the second endpoint prices the deposit at its confirming block', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp()); // 3000
    const w = watcher(feed, 100_000, [proxy.url, second.url]);
    await w.runOnce();

    const sent = await devnet.sendEth(devnet.account(0), dave.address, ETH / 2n); // block B
    await devnet.setRound(feed, 310_000_000_000n, await devnet.blockTimestamp()); // B+1: 3100
    await devnet.mine(1); // B+2: the confirming block
    await devnet.setRound(feed, 350_000_000_000n, await devnet.blockTimestamp()); // B+3: 3500
    proxy.failNext(ethCallTo(feed), { rpcError: { code: -32603, message: 'Internal error' } });

    const report = await w.runOnce();
    expect(proxy.pendingFaults()).toBe(0);
    expect(report.awaitingPrice).toBe(0);
    const row = await deposit(sent.txHash);
    expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3100', '1550']);
    expect(row.rate_details).toMatchObject({
      roundId: '2',
      blockNumber: (sent.blockNumber + 2n).toString(),
    });
    expect(row.rate_details).not.toHaveProperty('refusedAtConfirmingBlock');
    expect(priceWarnings()).toEqual([]);
    expect(logged.filter((l) => l.message.startsWith('RPC endpoint failed'))).toEqual([
      expect.objectContaining({
        level: 'warn',
        details: expect.objectContaining({ endpoint: expect.stringMatching(/^#0 /) }),
      }),
    ]);
    expect(await ledger.checkBalances()).toEqual([]);
  });
});

describe('a feed read that fails on every endpoint, each its own way', () => {
  const noState: RpcFault = {
    rpcError: {
      code: -32000,
      message:
        'missing trie node 288259a570829264e76b2c58d4369b5a94f086018dc4409d1d0131405c5d1975 (path )',
    },
  };
  const unavailable: RpcFault = { httpStatus: 503 };

  test.each([
    ['#0 answers 503 and #1 has no state', unavailable, noState],
    ['#0 has no state and #1 answers 503', noState, unavailable],
  ] satisfies Array<[string, RpcFault, RpcFault]>)(
    'when %s, the deposit waits (one endpoint did not answer: it may have the state) and is credited at its confirming block’s round on the next iteration',
    async (_, first, last) => {
      const feed = await devnet.deployAggregator(8, 'ETH / USD');
      await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp()); // 3000
      const w = watcher(feed, 100_000, [proxy.url, second.url]);
      await w.runOnce();

      const sent = await devnet.sendEth(devnet.account(0), dave.address, ETH / 2n); // block B
      await devnet.setRound(feed, 310_000_000_000n, await devnet.blockTimestamp()); // B+1: 3100
      await devnet.mine(1); // B+2: the confirming block
      await devnet.setRound(feed, 350_000_000_000n, await devnet.blockTimestamp()); // B+3: 3500
      proxy.failNext(ethCallTo(feed), first);
      second.failNext(ethCallTo(feed), last);

      const report = await w.runOnce();
      expect([proxy.pendingFaults(), second.pendingFaults()]).toEqual([0, 0]);
      const waiting = await deposit(sent.txHash);
      expect([waiting.status, waiting.rate, report.awaitingPrice]).toEqual(['seen', null, 1]);
      expect(priceWarnings().map((l) => l.details)).toEqual([
        expect.objectContaining({
          asset: 'ETH',
          confirmingBlock: (sent.blockNumber + 2n).toString(),
          kind: 'unreachable',
        }),
      ]);

      expect((await w.runOnce()).awaitingPrice).toBe(0);
      const row = await deposit(sent.txHash);
      expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3100', '1550']);
      expect(row.rate_details).toMatchObject({
        roundId: '2',
        blockNumber: (sent.blockNumber + 2n).toString(),
      });
      expect(row.rate_details).not.toHaveProperty('refusedAtConfirmingBlock');
    },
  );

  test('when no endpoint has the state of the confirming block, that is an answer: the deposit is priced at the latest block', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    const w = watcher(feed, 100_000, [proxy.url, second.url]);
    await w.runOnce();

    const sent = await devnet.sendEth(devnet.account(0), dave.address, ETH / 4n);
    await devnet.mine(2);
    const latest = await devnet.setRound(feed, 360_000_000_000n, await devnet.blockTimestamp());
    proxy.failNext(ethCallTo(feed), noState);
    second.failNext(ethCallTo(feed), {
      rpcError: { code: -32000, message: 'header not found' },
    });

    expect((await w.runOnce()).awaitingPrice).toBe(0);
    expect([proxy.pendingFaults(), second.pendingFaults()]).toEqual([0, 0]);
    const row = await deposit(sent.txHash);
    expect([row.status, row.rate, row.amount_usd]).toEqual(['credited', '3600', '900']);
    expect(row.rate_details).toMatchObject({
      blockNumber: latest.blockNumber.toString(),
      confirmingBlock: (sent.blockNumber + 2n).toString(),
    });
    expect(row.rate_details.refusedAtConfirmingBlock).toMatch(/header not found/);
    expect(priceWarnings()).toEqual([]);
  });
});

describe('the price unavailable warning', () => {
  test('is logged when a deposit starts waiting, when the cause changes, and every 5 minutes, not on every poll; one info line when the wait ends', async () => {
    const feed = await devnet.deployAggregator(8, 'ETH / USD');
    await devnet.setRound(feed, 300_000_000_000n, await devnet.blockTimestamp());
    await devnet.mine(1, { increaseTimeS: 7_200 }); // 2 hours old: stale at 3600 s
    const w = watcher(feed, 3_600);
    await w.runOnce();

    const first = await devnet.sendEth(devnet.account(0), dave.address, ETH / 10n);
    await devnet.mine(3);
    const polls = [];
    for (let i = 0; i < 4; i += 1) polls.push((await w.runOnce()).awaitingPrice);
    // The gauge every iteration; the warning once.
    expect(polls).toEqual([1, 1, 1, 1]);
    expect(priceWarnings()).toHaveLength(1);
    expect(priceWarnings()[0]!.details).toMatchObject({ asset: 'ETH', kind: 'refused' });
    expect(String(priceWarnings()[0]!.details['reason'])).toMatch(/s old at block \d+/);

    clockMs += 4 * MINUTE_MS;
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(1);
    clockMs += 1 * MINUTE_MS; // 5 minutes since the warning
    await w.runOnce();
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(2);

    // Another deposit starts waiting: said at once.
    const second = await devnet.sendEth(devnet.account(0), dave.address, ETH / 5n);
    await devnet.mine(3);
    expect((await w.runOnce()).awaitingPrice).toBe(2);
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(3);
    expect(priceWarnings()[2]!.details).toMatchObject({ confirmingBlocks: 2 });

    // The cause changes (the feed cannot be reached): said at once, and again when it is back.
    proxy.failNext(ethCallTo(feed), { httpStatus: 503 });
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(4);
    expect(priceWarnings()[3]!.details).toMatchObject({ kind: 'unreachable' });
    await w.runOnce();
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(5);
    expect(pricedLines()).toEqual([]);

    // The feed is updated: both are credited, one info line says so, and the warnings stop.
    clockMs += 3 * MINUTE_MS;
    await devnet.setRound(feed, 320_000_000_000n, await devnet.blockTimestamp());
    expect((await w.runOnce()).awaitingPrice).toBe(0);
    await w.runOnce();
    clockMs += 10 * MINUTE_MS;
    await w.runOnce();
    expect(priceWarnings()).toHaveLength(5);
    expect(pricedLines().map((l) => [l.level, l.details])).toEqual([
      [
        'info',
        expect.objectContaining({ asset: 'ETH', depositBlocks: 2, rate: '3200', waitedS: 480 }),
      ],
    ]);
    expect((await deposit(first.txHash)).amount_usd).toBe('320');
    expect((await deposit(second.txHash)).amount_usd).toBe('640');
  });
});
