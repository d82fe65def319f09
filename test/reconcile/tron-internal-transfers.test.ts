import { Kysely, PostgresDialect } from 'kysely';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { TronNetworkConfig } from '../../chain-watchers/config.js';
import { createTronAdapter } from '../../chain-watchers/tron/createTronAdapter.js';
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
 * Reconciliation of TRX a contract pays to a deposit address (internal transactions, log index
 * -2 minus their position): balances at the solidified block, a transfer still confirming, one
 * below the minimum named by its own log index beside one credited in the same transaction, and
 * booked by hand under that index.
 */

const SOLIDITY_LAG = 19;
const TRX = { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.25' }, minDeposit: '1' };
const USDT = { symbol: 'USDT', contract: MAINNET_USDT, decimals: 6, price: { fixed: '1' } };

let stack: TronWatcherStack;
let sim: TronSimulator;
let reconcileDb: Kysely<Database>;
let config: TronNetworkConfig;

/** The transaction's deposit rows, by log index. */
async function rowsOf(txId: string, columns: string) {
  const rows = await stack.depositRows(txId, `log_index, ${columns}`);
  return rows.sort((a, b) => Number(a['log_index']) - Number(b['log_index']));
}

async function findingsAbout(address: string) {
  const adapter = createTronAdapter(config, { ...FAST_TRON_ADAPTER, logger: quiet });
  try {
    const { findings } = await reconcileNetwork({ db: reconcileDb, network: config, adapter });
    return findings.filter((f) => f.address === address);
  } finally {
    await adapter.close();
  }
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
  config = stack.network();
});
afterAll(async () => {
  await reconcileDb?.destroy();
  await stack?.close();
});

test('two payouts of one transaction to one address, one below the minimum: no finding while not solidified, then only the ignored one is uncredited, by its own log index, until booked by hand under it', async () => {
  const w = stack.watcher(config);
  await w.runOnce();
  const carol = await stack.newUser(9201);
  const tx = sim.chain.payoutTrx({
    from: stack.sender,
    nameRecipients: true,
    payouts: [
      // Position 0, log index -2: below the 1 TRX minimum.
      { to: carol.address, amountSun: 500_000n },
      // Position 1, log index -3: credited.
      { to: carol.address, amountSun: 20_000_000n },
    ],
  });
  sim.chain.produceBlocks(1);
  await w.runOnce();
  expect(await rowsOf(tx, 'status, amount::text')).toEqual([
    { log_index: -3, status: 'seen', amount: '20' },
    { log_index: -2, status: 'ignored', amount: '0.5' },
  ]);
  // On chain at the head, not at the solidified block: the books agree there.
  expect(await findingsAbout(carol.address)).toEqual([]);

  // Solidified; the watcher has not polled since: the 20 is confirming, the 0.5 uncredited.
  sim.chain.produceBlocks(SOLIDITY_LAG);
  const waiting = await findingsAbout(carol.address);
  expect(waiting.map((f) => f.kind)).toEqual(['uncredited_deposits']);

  await w.runOnce();
  expect(await rowsOf(tx, 'status')).toEqual([
    { log_index: -3, status: 'credited' },
    { log_index: -2, status: 'ignored' },
  ]);
  expect(await stack.posted(`assets:custody:tron:TRX:${carol.address}`)).toBe('20');
  const block = String(sim.chain.locate(tx)!.block.number);
  expect(await findingsAbout(carol.address)).toEqual([
    expect.objectContaining({
      severity: 'warning',
      kind: 'uncredited_deposits',
      asset: 'TRX',
      actual: '0.5',
      details: expect.objectContaining({
        count: 1,
        deposits: [
          {
            txHash: tx,
            logIndex: -2,
            blockNumber: block,
            amount: '0.5',
            reason: 'below the minimum of 1 TRX',
          },
        ],
      }),
    }),
  ]);

  // Booked by hand under the credited one's index: it still names -2 as uncredited, and the
  // custody account now holds 0.5 the chain does not.
  const byHand = (logIndex: number) =>
    stack.ledger.postEntry({
      kind: 'adjustment',
      description: 'TRX paid by a contract, below the minimum, kept in custody',
      metadata: { chain: { network: 'tron', txHash: tx, logIndex, blockNumber: block } },
      postings: [
        { account: `assets:custody:tron:TRX:${carol.address}`, amount: '0.5', currency: 'TRX' },
        { account: 'equity:trading:TRX', amount: '-0.5', currency: 'TRX' },
      ],
    });
  const wrong = await byHand(-3);
  expect((await findingsAbout(carol.address)).map((f) => [f.kind, f.difference])).toEqual([
    ['custody_mismatch', '-0.5'],
    ['uncredited_deposits', '0.5'],
  ]);
  await stack.ledger.reverseEntry({ entryId: wrong.entryId, kind: 'adjustment.reversal' });
  await byHand(-2);
  expect(await findingsAbout(carol.address)).toEqual([]);
});
