import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { createFixedPriceSource } from '../../chain-watchers/prices/fixed.js';
import { PriceUnavailableError, type PriceSource } from '../../chain-watchers/prices.js';
import { createTronAdapter } from '../../chain-watchers/tron/createTronAdapter.js';
import type { PostgresLedger } from '../../ledger/index.js';
import { MAINNET_USDT, PAYOUT_CONTRACT } from '../support/tron-sim/chain.js';
import type { TronSimulator } from '../support/tron-sim/server.js';
import {
  FAST_TRON_ADAPTER,
  quiet,
  startTronWatcherStack,
  type TronWatcherStack,
} from '../support/tron-sim/stack.js';

/**
 * One contract call that pays one deposit address twice: TRX as an internal transaction (log
 * index -2 - position) and USDT as a Transfer log (log index 0), e.g. a swap or an exchange's
 * withdrawal paying both. Two deposits of the same transaction, each credited once, through
 * re-scans, restarts and a reorg deeper than the solidified block that removes them both and
 * mines the transaction again.
 */

const SOLIDITY_LAG = 19;
const TRX = { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.25' }, minDeposit: '1' };
const USDT = { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } };

let stack: TronWatcherStack;
let sim: TronSimulator;
let ledger: PostgresLedger;
let telegramId = 870_000;

const customer = (userId: string) => `liabilities:customers:${userId}`;
const receivable = (userId: string) => `assets:receivables:customers:${userId}`;
const posted = (account: string) => stack.posted(account);

async function rows(txId: string) {
  const { rows } = await stack.database.pool.query(
    `select log_index, status, asset, amount::text, amount_usd::text, reincluded
       from deposits where tx_hash = $1 order by log_index`,
    [txId],
  );
  return rows;
}

async function creditEntries(txId: string): Promise<number> {
  const { rows } = await stack.database.pool.query<{ count: string }>(
    `select count(*)::text as count from ledger_entries
      where kind = 'deposit' and metadata -> 'chain' ->> 'txHash' = $1`,
    [txId],
  );
  return Number(rows[0]!.count);
}

/** Moves the watcher's cursor back below `txId`'s block: the next iteration scans it again. */
async function rewindCursorBelow(txId: string): Promise<void> {
  const block = sim.chain.locate(txId)!.block;
  const before = sim.chain.block(block.number - 1)!;
  await stack.database.pool.query(
    `update watcher_cursors set block_number = $1, block_hash = $2 where network = 'tron'`,
    [before.number, before.blockID],
  );
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

async function mineAndSolidify(w: DepositWatcher) {
  sim.chain.produceBlocks(SOLIDITY_LAG + 2);
  for (let i = 0; i < 2; i += 1) await w.runOnce();
}

/** A reorg deeper than the solidified block: every block above `height` replaced. */
async function forkAt(height: number, w: DepositWatcher) {
  const dropped = sim.chain.headNumber - height;
  sim.chain.reorgTo(height);
  sim.chain.produceBlocks(dropped + SOLIDITY_LAG + 1);
  for (let i = 0; i < 3; i += 1) await w.runOnce();
}

beforeAll(async () => {
  stack = await startTronWatcherStack({
    solidityLag: SOLIDITY_LAG,
    senderTrx: 10n ** 12n,
    network: () => ({ assets: [USDT, TRX] }),
  });
  ({ sim, ledger } = stack);
  sim.chain.setTrxBalance(PAYOUT_CONTRACT, 10n ** 12n);
  sim.chain.mintToken(sim.chain.usdt, PAYOUT_CONTRACT, 10n ** 12n);
  sim.chain.produceBlocks(3);
});
afterAll(async () => {
  await stack?.close();
});

describe('Tron: TRX (internal transaction) and USDT (Transfer log) paid to one address by one call', () => {
  test.each(['calldata', 'receipts'] as const)(
    '%s discovery: both credited once each; re-scans and a fresh watcher credit nothing twice',
    async (discovery) => {
      const config = stack.network({ discovery });
      const w = stack.watcher(config);
      await w.runOnce();
      const user = await stack.newUser((telegramId += 1));
      const tx = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        payouts: [
          // Refused by its recipient: undone, listed `rejected`, at position 0.
          { to: sim.chain.account('refuses'), amountSun: 9_000_000n, rejected: true },
          { to: user.address, amountSun: 40_000_000n },
        ],
        tokenPayouts: [{ token: sim.chain.usdt, to: user.address, amount: 100_000_000n }],
      });
      await mineAndSolidify(w);
      expect(await rows(tx)).toEqual([
        {
          log_index: -3,
          status: 'credited',
          asset: 'TRX',
          amount: '40',
          amount_usd: '10',
          reincluded: 0,
        },
        {
          log_index: 0,
          status: 'credited',
          asset: 'USDT',
          amount: '100',
          amount_usd: '100',
          reincluded: 0,
        },
      ]);
      expect(await posted(customer(user.id))).toBe('110');

      await rewindCursorBelow(tx);
      await w.runOnce();
      await rewindCursorBelow(tx);
      await stack.watcher(config).runOnce();
      expect(await creditEntries(tx)).toBe(2);
      expect(await posted(customer(user.id))).toBe('110');
      expect(await posted(`assets:custody:tron:TRX:${user.address}`)).toBe('40');
      expect(await posted(`assets:custody:tron:USDT:${user.address}`)).toBe('100');
      expect(await ledger.checkBalances()).toEqual([]);
    },
  );

  test('both reversed by a deep reorg after being spent; mined again, each credit repays what its own reversal booked to the receivable, none left owed', async () => {
    const w = stack.watcher(stack.network());
    await w.runOnce();
    const user = await stack.newUser((telegramId += 1));
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.payoutTrx({
      from: stack.sender,
      nameRecipients: true,
      payouts: [{ to: user.address, amountSun: 40_000_000n }],
      tokenPayouts: [{ token: sim.chain.usdt, to: user.address, amount: 100_000_000n }],
    });
    await mineAndSolidify(w);
    expect(await posted(customer(user.id))).toBe('110');
    await spend(user.id, '110');

    await forkAt(forkHeight, w);
    expect((await rows(tx)).map((r) => r.status)).toEqual(['reversed', 'reversed']);
    expect(await posted(customer(user.id))).toBe('0');
    expect(await posted(receivable(user.id))).toBe('110');

    sim.chain.rebroadcast(tx);
    await mineAndSolidify(w);
    expect(await rows(tx)).toMatchObject([
      { log_index: -2, status: 'credited', amount_usd: '10', reincluded: 1 },
      { log_index: 0, status: 'credited', amount_usd: '100', reincluded: 1 },
    ]);
    // 100 + 10 came back: the 110 owed is repaid in full, nothing left over to spend again.
    expect(await posted(receivable(user.id))).toBe('0');
    expect(await posted(customer(user.id))).toBe('0');
    const { rows: credits } = await stack.database.pool.query(
      `select metadata -> 'chain' ->> 'logIndex' as log_index,
              metadata -> 'receivableRepaid' ->> 'amount' as repaid
         from ledger_entries
        where kind = 'deposit' and metadata -> 'chain' ->> 'txHash' = $1
          and metadata ? 'receivableRepaid' order by 1`,
      [tx],
    );
    expect(credits).toEqual([
      { log_index: '-2', repaid: '10' },
      { log_index: '0', repaid: '100' },
    ]);
    // Nothing more from a fresh watcher.
    sim.chain.produceBlocks(2);
    await stack.watcher(stack.network()).runOnce();
    expect(await creditEntries(tx)).toBe(4);
    expect(await posted(receivable(user.id))).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('two TRX payouts of one call to one address (1 and 100 USD), reversed after being spent; mined again, each credit repays its own reversal, none left owed', async () => {
    const w = stack.watcher(stack.network());
    await w.runOnce();
    const user = await stack.newUser((telegramId += 1));
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.payoutTrx({
      from: stack.sender,
      nameRecipients: true,
      payouts: [
        { to: user.address, amountSun: 4_000_000n },
        { to: user.address, amountSun: 400_000_000n },
      ],
    });
    await mineAndSolidify(w);
    expect(await posted(customer(user.id))).toBe('101');
    await spend(user.id, '101');

    await forkAt(forkHeight, w);
    expect((await rows(tx)).map((r) => r.status)).toEqual(['reversed', 'reversed']);
    expect(await posted(receivable(user.id))).toBe('101');

    sim.chain.rebroadcast(tx);
    await mineAndSolidify(w);
    expect(await rows(tx)).toMatchObject([
      { log_index: -3, status: 'credited', amount_usd: '100', reincluded: 1 },
      { log_index: -2, status: 'credited', amount_usd: '1', reincluded: 1 },
    ]);
    expect(await posted(receivable(user.id))).toBe('0');
    expect(await posted(customer(user.id))).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('the TRX credited first and the USDT an iteration later (its feed was down): after a reorg, mined again, each credit repays its own reversal, not the newest', async () => {
    const config = stack.network();
    const adapter = createTronAdapter(config, { ...FAST_TRON_ADAPTER, logger: quiet });
    let usdtFeedDown = false;
    const fixedUsdt = createFixedPriceSource('1');
    const usdtFeed: PriceSource = {
      quote: async (block) => {
        if (usdtFeedDown) throw new PriceUnavailableError('feed down', { kind: 'unreachable' });
        return fixedUsdt.quote(block);
      },
    };
    const w = new DepositWatcher({
      network: config,
      adapter,
      ledger,
      pool: stack.database.pool,
      priceSources: new Map([
        ['TRX', createFixedPriceSource('0.25')],
        ['USDT', usdtFeed],
      ]),
      logger: quiet,
    });
    try {
      await w.runOnce();
      const user = await stack.newUser((telegramId += 1));
      const forkHeight = sim.chain.headNumber;
      const tx = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        payouts: [{ to: user.address, amountSun: 40_000_000n }],
        tokenPayouts: [{ token: sim.chain.usdt, to: user.address, amount: 100_000_000n }],
      });
      usdtFeedDown = true;
      await mineAndSolidify(w);
      expect((await rows(tx)).map((r) => [r.asset, r.status])).toEqual([
        ['TRX', 'credited'],
        ['USDT', 'confirming'],
      ]);
      usdtFeedDown = false;
      await w.runOnce();
      expect(await posted(customer(user.id))).toBe('110');
      await spend(user.id, '110');

      await forkAt(forkHeight, w);
      expect((await rows(tx)).map((r) => r.status)).toEqual(['reversed', 'reversed']);
      expect(await posted(receivable(user.id))).toBe('110');

      sim.chain.rebroadcast(tx);
      await mineAndSolidify(w);
      expect(await rows(tx)).toMatchObject([
        { log_index: -2, status: 'credited', amount_usd: '10', reincluded: 1 },
        { log_index: 0, status: 'credited', amount_usd: '100', reincluded: 1 },
      ]);
      expect(await posted(receivable(user.id))).toBe('0');
      expect(await posted(customer(user.id))).toBe('0');
      expect(await ledger.checkBalances()).toEqual([]);
    } finally {
      await adapter.close();
    }
  });
});
