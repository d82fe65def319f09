import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { createTronAdapter } from '../../chain-watchers/tron/createTronAdapter.js';
import type { PostgresLedger } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { MAINNET_USDT, PAYOUT_CONTRACT, TronChain } from '../support/tron-sim/chain.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';
import {
  FAST_TRON_ADAPTER,
  quiet,
  startTronWatcherStack,
  type TronWatcherStack,
} from '../support/tron-sim/stack.js';
import { ledgerKilledAfterCredits } from '../support/watcherFaults.js';

/**
 * Adversarial cases for the Tron deposit watcher, against the TronGrid simulator and
 * PostgreSQL: hosts on other forks than the head the watcher read, deposits credited, spent,
 * reversed and mined again at another position, the watcher stopped between scan and commit.
 */

const SOLIDITY_LAG = 19;

let stack: TronWatcherStack;
let sim: TronSimulator;
let database: TestDatabase;
let ledger: PostgresLedger;
let sender: string;
let telegramId = 870_000;

const network = (overrides: Record<string, unknown> = {}) => stack.network(overrides);
const watcher = (config = network()) => stack.watcher(config);
const posted = (account: string) => stack.posted(account);
const customer = (userId: string) => `liabilities:customers:${userId}`;
const receivable = (userId: string) => `assets:receivables:customers:${userId}`;

async function newUser() {
  telegramId += 1;
  return stack.newUser(telegramId);
}

async function rowsOf(txId: string) {
  const { rows } = await database.pool.query<{
    log_index: number;
    status: string;
    confirmations: number;
    amount: string | null;
  }>(
    `select log_index, status, confirmations, amount::text from deposits
      where tx_hash = $1 order by log_index`,
    [txId],
  );
  return rows;
}

/** Spends `amount` of a customer's balance (an admin debit). */
async function spend(userId: string, amount: string) {
  await ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: customer(userId), amount },
      { account: 'expenses:promotions', amount: `-${amount}` },
    ],
  });
}

async function expectBalancedLedger() {
  expect(await ledger.checkBalances()).toEqual([]);
  const totals = (await ledger.trialBalance()).totals;
  expect(totals.map((t) => [t.currency, t.net.toString()])).toEqual(
    totals.map((t) => [t.currency, '0']),
  );
}

/**
 * A load balancer over two nodes: requests whose path matches `toSecond` go to `second`, the
 * rest to `first` (as TronGrid's gateway may send two requests of one scan to two nodes).
 */
async function startSplitProxy(
  first: string,
  second: string,
  toSecond: RegExp,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const target = new URL(req.url ?? '/', toSecond.test(req.url ?? '') ? second : first);
    const forwarded = request(
      target,
      { method: req.method, headers: { ...req.headers, host: target.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forwarded.on('error', () => res.destroy());
    req.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Two chains that agree block for block (same operations on each), a payer funded on both. */
function twinChains(solidityLag: number): [TronChain, TronChain, string] {
  const chains = [new TronChain({ solidityLag }), new TronChain({ solidityLag })];
  const payer = chains[0]!.account('fork-payer');
  for (const chain of chains) {
    chain.mintToken(chain.usdt, payer, 10n ** 12n);
    chain.setTrxBalance(payer, 10n ** 12n);
    chain.produceBlocks(3);
  }
  expect(chains[0]!.head.blockID).toBe(chains[1]!.head.blockID);
  return [chains[0]!, chains[1]!, payer];
}

beforeAll(async () => {
  stack = await startTronWatcherStack({
    solidityLag: SOLIDITY_LAG,
    senderTrx: 10n ** 15n,
    network: () => ({
      assets: [
        { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } },
        { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.25' } },
      ],
    }),
  });
  ({ sim, database, ledger, sender } = stack);
  sim.chain.setTrxBalance(PAYOUT_CONTRACT, 10n ** 12n);
  sim.chain.produceBlocks(3);
});
afterAll(async () => {
  await stack?.close();
});

describe('Tron watcher, adversarial', () => {
  test.each([
    { confirmations: 'solidified' as const, label: 'solidified' },
    { confirmations: 4, label: '4 confirmations' },
  ])(
    'the head from a host ahead on another fork, the scan failed over to a host whose fork has the deposit ($label): nothing is credited before the deposit is final on its own fork',
    async ({ confirmations, label }) => {
      // Two nodes that agree up to a block, then each follow their own fork: A (the full host)
      // is ahead, its solidified block above the fork; B (the fallback) has the deposit, two
      // blocks deep, nothing solidified above the fork.
      const lag = 5;
      const chains = [new TronChain({ solidityLag: lag }), new TronChain({ solidityLag: lag })];
      const payer = chains[0]!.account('fork-payer');
      for (const chain of chains) {
        chain.mintToken(chain.usdt, payer, 10n ** 12n);
        chain.setTrxBalance(payer, 10n ** 12n);
        chain.produceBlocks(3);
      }
      const [chainA, chainB] = chains as [TronChain, TronChain];
      expect(chainA.head.blockID).toBe(chainB.head.blockID);
      const forkedAt = chainA.headNumber;
      const a = await startTronSimulator({ chain: chainA });
      const b = await startTronSimulator({ chain: chainB });
      try {
        const fay = await newUser();
        const tx = chainB.transferToken({
          token: chainB.usdt,
          from: payer,
          to: fay.address,
          amount: 6_000_000n,
        });
        chainB.produceBlocks(3);
        chainA.produceBlocks(15);
        expect(chainA.solidifiedNumber).toBeGreaterThan(forkedAt + 2);
        expect(chainB.solidifiedNumber).toBeLessThan(forkedAt + 1);
        const w = watcher(
          network({
            name: `tron-fork-${label.replace(/ /g, '-')}`,
            fullHost: a.url,
            fallbackHosts: [b.url],
            confirmations,
            maxBlockRange: 2,
            startBlock: forkedAt + 1,
          }),
        );
        // A answers the head, then fails the scan once (an overloaded gateway): B scans.
        a.failNext(1, { kind: 'status', status: 503 }, 'wallet/getblockbylimitnext');
        const report = await w.runOnce();
        expect(report).toMatchObject({
          head: BigInt(forkedAt + 15),
          scanned: { from: BigInt(forkedAt + 1), to: BigInt(forkedAt + 2) },
          recorded: 1,
          credited: 0,
        });
        // On B, the deposit is one of three blocks past the fork, not solidified.
        expect(await rowsOf(tx)).toMatchObject([{ status: 'seen' }]);
        expect(await posted(customer(fay.id))).toBe('0');

        // A goes away: B's fork is the chain from now on. It grows: credited, once.
        a.addFault({ fault: { kind: 'reset' } });
        chainB.produceBlocks(lag + 4);
        for (let i = 0; i < 3; i += 1) await w.runOnce();
        expect(await rowsOf(tx)).toMatchObject([{ status: 'credited', amount: '6' }]);
        expect(await posted(customer(fay.id))).toBe('6');
        await expectBalancedLedger();
      } finally {
        await a.close();
        await b.close();
      }
    },
  );

  test.each([
    { blocksFrom: 'B', expected: { status: 'ignored', credited: '0' } },
    { blocksFrom: 'A', expected: { status: 'credited', credited: '8' } },
  ])(
    'a gateway serving blocks from fork $blocksFrom and receipts from the other fork, where the same transaction had the other outcome: the receipt is refused, the scan fails over to a node of the fork of the blocks, and the deposit is $expected.status',
    async ({ blocksFrom, expected }) => {
      // Two forks at the same height hold the same transaction (the very same, broadcast to
      // both): on A it pays Gus; on B the payer spent the tokens first, and it reverts.
      const [chainA, chainB, payer] = twinChains(SOLIDITY_LAG);
      const gus = await newUser();
      const forkedAt = chainA.headNumber;
      const both = [chainA, chainB].map((chain) =>
        chain.transferToken({
          token: chain.usdt,
          from: payer,
          to: gus.address,
          amount: 8_000_000n,
        }),
      );
      expect(both[0]).toBe(both[1]);
      const tx = both[0]!;
      for (const chain of [chainA, chainB]) chain.produceBlocks(1);
      chainB.reorg(1); // B drops that block: the transaction is no longer mined there...
      chainB.transferToken({
        token: chainB.usdt,
        from: payer,
        to: chainB.account('elsewhere'),
        amount: 10n ** 12n,
      });
      chainB.rebroadcast(tx); // ...and is mined again after the payer emptied its balance
      chainB.produceBlocks(1);
      expect(chainB.locate(tx)?.block.number).toBe(forkedAt + 1);
      expect(chainA.locate(tx)?.block.number).toBe(forkedAt + 1);
      chainA.produceBlocks(SOLIDITY_LAG + 3);
      chainB.produceBlocks(SOLIDITY_LAG + 3);
      const a = await startTronSimulator({ chain: chainA });
      const b = await startTronSimulator({ chain: chainB });
      // The gateway: blocks from one fork's node, receipts from the other's; the fallback is
      // the node of the blocks' fork.
      const [blocksNode, receiptsNode] = blocksFrom === 'B' ? [b, a] : [a, b];
      const gateway = await startSplitProxy(blocksNode.url, receiptsNode.url, /gettransactioninfo/);
      try {
        const w = watcher(
          network({
            name: `tron-split-receipts-${blocksFrom.toLowerCase()}`,
            fullHost: gateway.url,
            fallbackHosts: [blocksNode.url],
            startBlock: forkedAt - 1,
          }),
        );
        for (let i = 0; i < 3; i += 1) await w.runOnce();
        expect(await rowsOf(tx)).toMatchObject([{ status: expected.status }]);
        expect(await posted(customer(gus.id))).toBe(expected.credited);
        await expectBalancedLedger();
      } finally {
        await gateway.close();
        await a.close();
        await b.close();
      }
    },
  );

  test('two USDT logs of one transaction, a TRX transfer and TRX a contract paid, all to one user, credited and spent: a reorg that mines them all again keeps the credits; one that drops them reverses all four (the spent part owed); mined again, each is credited once and the receivable repaid once', async () => {
    const w = watcher();
    await w.runOnce();
    const hal = await newUser();
    const stranger = sim.chain.account('stranger');
    const forkHeight = sim.chain.headNumber;
    const txs = [
      // Logs 0 and 2 pay Hal 30 and 20 USDT, log 1 someone else.
      sim.chain.disperseToken({
        token: sim.chain.usdt,
        from: sender,
        transfers: [
          { to: hal.address, amount: 30_000_000n },
          { to: stranger, amount: 5_000_000n },
          { to: hal.address, amount: 20_000_000n },
        ],
      }),
      // 40 TRX ($10) of its own: log index -1.
      sim.chain.sendTrx({ from: sender, to: hal.address, amountSun: 40_000_000n }),
      // 20 TRX ($5) a contract paid, second internal transaction: log index -3.
      sim.chain.payoutTrx({
        from: sender,
        nameRecipients: true,
        payouts: [
          { to: stranger, amountSun: 1_000_000n },
          { to: hal.address, amountSun: 20_000_000n },
        ],
      }),
    ];
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const statuses = async () =>
      (await Promise.all(txs.map(rowsOf))).map((rows) =>
        rows.map((r) => [r.log_index, r.status, r.amount]),
      );
    expect(await statuses()).toEqual([
      [
        [0, 'credited', '30'],
        [2, 'credited', '20'],
      ],
      [[-1, 'credited', '40']],
      [[-3, 'credited', '20']],
    ]);
    expect(await posted(customer(hal.id))).toBe('65');
    await spend(hal.id, '60');

    // A reorg deeper than the solidified block; the new branch mines all three again, later,
    // and is solidified before the watcher looks.
    const dropped = sim.chain.headNumber - forkHeight;
    sim.chain.reorgTo(forkHeight);
    sim.chain.produceBlocks(2);
    for (const tx of txs) sim.chain.rebroadcast(tx);
    sim.chain.produceBlocks(dropped + SOLIDITY_LAG);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await statuses()).toEqual([
      [
        [0, 'credited', '30'],
        [2, 'credited', '20'],
      ],
      [[-1, 'credited', '40']],
      [[-3, 'credited', '20']],
    ]);
    // The same transfers, to the same addresses, under the same log indexes: the credits stand,
    // moved to their new blocks; nothing is booked.
    expect(await posted(customer(hal.id))).toBe('5');
    expect(await posted(receivable(hal.id))).toBe('0');
    const entries = async () =>
      (
        await database.pool.query<{ kind: string; n: number }>(
          `select kind, count(*)::int as n from ledger_entries
            where metadata->'chain'->>'txHash' = any($1) group by kind order by kind`,
          [txs],
        )
      ).rows;
    expect(await entries()).toEqual([{ kind: 'deposit', n: 4 }]);

    // A second reorg, whose branch has none of them: all four reversed, the 60 spent owed.
    const secondFork = sim.chain.locate(txs[0]!)!.block.number - 1;
    const secondDropped = sim.chain.headNumber - secondFork;
    sim.chain.reorgTo(secondFork);
    sim.chain.produceBlocks(secondDropped + SOLIDITY_LAG);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect((await statuses()).flat().map(([, status]) => status)).toEqual(
      Array(4).fill('reversed'),
    );
    expect(await posted(customer(hal.id))).toBe('0');
    expect(await posted(receivable(hal.id))).toBe('60');

    // Mined again later: credited once each; the 60 owed is repaid, 5 left to Hal.
    for (const tx of txs) sim.chain.rebroadcast(tx);
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect((await statuses()).flat().map(([, status]) => status)).toEqual(
      Array(4).fill('credited'),
    );
    expect(await posted(receivable(hal.id))).toBe('0');
    expect(await posted(customer(hal.id))).toBe('5');
    expect(await posted(`assets:custody:tron:USDT:${hal.address}`)).toBe('50');
    expect(await posted(`assets:custody:tron:TRX:${hal.address}`)).toBe('60');
    // Nothing more from a fresh watcher.
    sim.chain.produceBlocks(2);
    await watcher().runOnce();
    expect(await posted(customer(hal.id))).toBe('5');
    expect(await posted(receivable(hal.id))).toBe('0');
    await expectBalancedLedger();
  });

  test("the watcher's database connection killed after it booked the credits of a scan, before its commit: nothing kept; a restarted watcher credits each deposit once", async () => {
    const killer = database.newPool(1);
    const trap = ledgerKilledAfterCredits(ledger, killer);
    const config = network({ name: 'tron-kill', startBlock: undefined });
    const start = (ledgerSeen: PostgresLedger) => {
      const adapter = createTronAdapter(config, { ...FAST_TRON_ADAPTER, logger: quiet });
      return {
        adapter,
        watcher: new DepositWatcher({
          network: config,
          adapter,
          ledger: ledgerSeen,
          pool: database.pool,
          priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
          logger: quiet,
        }),
      };
    };
    const first = start(trap.ledger);
    const second = start(ledger);
    try {
      const ivy = await newUser();
      await first.watcher.runOnce();
      const txs = [
        sim.chain.transferToken({
          token: sim.chain.usdt,
          from: sender,
          to: ivy.address,
          amount: 12_000_000n,
        }),
        sim.chain.sendTrx({ from: sender, to: ivy.address, amountSun: 8_000_000n }),
      ];
      // Mined and solidified before the watcher looks: one iteration records and credits both.
      sim.chain.produceBlocks(SOLIDITY_LAG + 2);
      trap.arm();
      await expect(first.watcher.runOnce()).rejects.toThrow();
      expect(trap.killed()).toBe(1);
      expect(await posted(customer(ivy.id))).toBe('0');
      const rows = async () =>
        (
          await database.pool.query<{ status: string }>(
            `select status from deposits where network = 'tron-kill' order by log_index`,
          )
        ).rows.map((r) => r.status);
      expect(await rows()).toEqual([]);

      // Restarted: another watcher (another adapter) on the same database.
      for (let i = 0; i < 2; i += 1) await second.watcher.runOnce();
      expect(await rows()).toEqual(['credited', 'credited']);
      expect(await posted(customer(ivy.id))).toBe('14');
      const { rows: entries } = await database.pool.query(
        `select count(*)::int as n from ledger_entries
          where kind = 'deposit' and metadata->'chain'->>'txHash' = any($1)`,
        [txs],
      );
      expect(entries).toEqual([{ n: 2 }]);
      // The first watcher, back, finds nothing left to do.
      await first.watcher.runOnce();
      expect(await posted(customer(ivy.id))).toBe('14');
      await expectBalancedLedger();
    } finally {
      await first.adapter.close();
      await second.adapter.close();
      await killer.end();
    }
  });
});
