import { Kysely, PostgresDialect } from 'kysely';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createTronAdapter } from '../../chain-watchers/tron/createTronAdapter.js';
import type { TronNetworkConfig } from '../../chain-watchers/config.js';
import type { Database } from '../../src/db/schema.js';
import { reconcileNetwork } from '../../src/reconcile/reconcileNetwork.js';
import { MAINNET_USDT, PAYOUT_CONTRACT } from '../support/tron-sim/chain.js';
import type { TronSimulator } from '../support/tron-sim/server.js';
import {
  FAST_TRON_ADAPTER,
  quiet,
  startTronWatcherStack,
  type TronWatcherStack,
} from '../support/tron-sim/stack.js';

/**
 * TRX that a contract pays to a deposit address (an exchange's withdrawal, a batch payout): an
 * internal transaction in the receipt's `internal_transactions`, not a transaction of its own.
 * It is credited like any TRX deposit, once, when its block is solidified.
 */

const SOLIDITY_LAG = 19;
const TRX = { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.25' }, minDeposit: '1' };
const USDT = { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } };

let stack: TronWatcherStack;
let sim: TronSimulator;
let reconcileDb: Kysely<Database>;

const network = (overrides: Record<string, unknown> = {}) => stack.network(overrides);
const posted = (account: string) => stack.posted(account);

async function deposits(txId: string) {
  return stack.depositRows(
    txId,
    'address, log_index, status, asset, amount::text, amount_usd::text, ignore_reason',
  );
}

/** Entries the ledger holds for a chain transaction (a credit is one entry). */
async function entriesOf(txId: string): Promise<number> {
  const { rows } = await stack.database.pool.query<{ count: string }>(
    `select count(*)::text as count from ledger_entries where metadata -> 'chain' ->> 'txHash' = $1`,
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

beforeAll(async () => {
  stack = await startTronWatcherStack({
    solidityLag: SOLIDITY_LAG,
    senderTrx: 10n ** 12n,
    network: () => ({ apiKey: 'test-key', pollIntervalMs: 100, assets: [USDT, TRX] }),
  });
  sim = stack.sim;
  sim.chain.setTrxBalance(PAYOUT_CONTRACT, 10n ** 12n);
  sim.chain.produceBlocks(3);
  reconcileDb = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: stack.database.newPool(1) }),
  });
});
afterAll(async () => {
  await reconcileDb?.destroy();
  await stack?.close();
});

describe('Tron: TRX paid by a contract (internal transactions)', () => {
  test('a payout contract naming the recipient (calldata discovery): credited once, at the TRX price, when solidified; a re-scan credits nothing twice; custody matches the chain', async () => {
    const config = network();
    const w = stack.watcher(config);
    await w.runOnce();
    const alice = await stack.newUser(9101);
    const bob = await stack.newUser(9102);
    const stranger = sim.chain.account('stranger');
    const tx = sim.chain.payoutTrx({
      from: stack.sender,
      nameRecipients: true,
      payouts: [
        { to: stranger, amountSun: 3_000_000n },
        { to: alice.address, amountSun: 40_000_000n },
        // Refused by the recipient: undone, nothing moved.
        { to: bob.address, amountSun: 5_000_000n, rejected: true },
        // A TRC-10 token, not TRX.
        { to: bob.address, amountSun: 7_000_000n, tokenId: '1002000' },
      ],
    });
    sim.chain.produceBlocks(1);
    await w.runOnce();
    expect(sim.chain.trxBalance(alice.address)).toBe(40_000_000n);
    // Only alice's TRX: the internal transaction at position 1, log index -2 - 1.
    expect(await deposits(tx)).toEqual([
      {
        address: alice.address,
        log_index: -3,
        status: 'seen',
        asset: 'TRX',
        amount: '40',
        amount_usd: null,
        ignore_reason: null,
      },
    ]);

    sim.chain.produceBlocks(SOLIDITY_LAG);
    await w.runOnce();
    // 40 TRX x 0.25 USD.
    expect(await deposits(tx)).toEqual([
      expect.objectContaining({ status: 'credited', amount: '40', amount_usd: '10' }),
    ]);
    expect(await posted(`liabilities:customers:${alice.id}`)).toBe('10');
    expect(await posted(`assets:custody:tron:TRX:${alice.address}`)).toBe('40');
    expect(await posted(`liabilities:customers:${bob.id}`)).toBe('0');
    // Nothing of ours left: no outgoing transfer was recorded.
    const { rows: outgoing } = await stack.database.pool.query(
      `select 1 from outgoing_transfers where tx_hash = $1`,
      [tx],
    );
    expect(outgoing).toEqual([]);

    // The same block scanned again, by the same watcher and by a fresh one.
    await rewindCursorBelow(tx);
    await w.runOnce();
    await rewindCursorBelow(tx);
    await stack.watcher(config).runOnce();
    expect(await deposits(tx)).toEqual([expect.objectContaining({ status: 'credited' })]);
    expect(await entriesOf(tx)).toBe(1);
    expect(await posted(`liabilities:customers:${alice.id}`)).toBe('10');
    expect(await stack.ledger.checkBalances()).toEqual([]);

    // The chain holds 40 TRX at alice's address, and so do the books.
    const adapter = createTronAdapter(config, { ...FAST_TRON_ADAPTER, logger: quiet });
    try {
      const { findings } = await reconcileNetwork({ db: reconcileDb, network: config, adapter });
      expect(findings.filter((f) => f.address === alice.address)).toEqual([]);
      expect(findings.filter((f) => f.kind === 'custody_mismatch')).toEqual([]);
    } finally {
      await adapter.close();
    }
  });

  test('a payout contract whose call data does not name the recipient: receipts discovery credits it once', async () => {
    const config = network({ discovery: 'receipts' });
    const w = stack.watcher(config);
    await w.runOnce();
    const carol = await stack.newUser(9103);
    const tx = sim.chain.payoutTrx({
      from: stack.sender,
      payouts: [{ to: carol.address, amountSun: 12_000_000n }],
    });
    sim.chain.produceBlocks(SOLIDITY_LAG + 1);
    await w.runOnce();
    expect(await deposits(tx)).toEqual([
      expect.objectContaining({ log_index: -2, status: 'credited', amount: '12', amount_usd: '3' }),
    ]);
    await rewindCursorBelow(tx);
    await stack.watcher(config).runOnce();
    expect(await entriesOf(tx)).toBe(1);
    expect(await posted(`liabilities:customers:${carol.id}`)).toBe('3');
    expect(await stack.ledger.checkBalances()).toEqual([]);
  });

  test.each(['calldata', 'receipts'] as const)(
    '%s discovery: a failed payout, a rejected one, TRC-10 and TRX below the minimum are not credited',
    async (discovery) => {
      const config: TronNetworkConfig = network({ discovery });
      const w = stack.watcher(config);
      await w.runOnce();
      const dave = await stack.newUser(discovery === 'calldata' ? 9104 : 9105);
      const failed = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        fail: true,
        payouts: [{ to: dave.address, amountSun: 50_000_000n }],
      });
      const refused = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        payouts: [{ to: dave.address, amountSun: 60_000_000n, rejected: true }],
      });
      const trc10 = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        payouts: [{ to: dave.address, amountSun: 70_000_000n, tokenId: '1002000' }],
      });
      const small = sim.chain.payoutTrx({
        from: stack.sender,
        nameRecipients: true,
        payouts: [{ to: dave.address, amountSun: 500_000n }],
      });
      sim.chain.produceBlocks(SOLIDITY_LAG + 1);
      await w.runOnce();
      expect(sim.chain.trxBalance(dave.address)).toBe(500_000n);
      expect(await deposits(failed)).toEqual([]);
      expect(await deposits(refused)).toEqual([]);
      expect(await deposits(trc10)).toEqual([]);
      expect(await deposits(small)).toEqual([
        expect.objectContaining({
          status: 'ignored',
          amount: '0.5',
          ignore_reason: 'below the minimum of 1 TRX',
        }),
      ]);
      expect(await posted(`liabilities:customers:${dave.id}`)).toBe('0');
    },
  );
});
