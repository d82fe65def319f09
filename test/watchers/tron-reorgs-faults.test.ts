import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { MAINNET_USDT, PAYOUT_CONTRACT } from '../support/tron-sim/chain.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';
import { startTronWatcherStack, type TronWatcherStack } from '../support/tron-sim/stack.js';

/**
 * The Tron counterparts of the EVM reorg tests (test/watchers/evm-deposits.test.ts): credited
 * deposits that a reorg deeper than the solidified block removes, mined again (the very same
 * transaction, `rebroadcast`) in a later block of the new branch with the same outcome,
 * another outcome, or paying another user's address.
 */

const SOLIDITY_LAG = 19;

let stack: TronWatcherStack;
let sim: TronSimulator;
let database: TestDatabase;
let ledger: PostgresLedger;
let sender: string;
let telegramId = 850_000;

const network = (overrides: Record<string, unknown> = {}) => stack.network(overrides);
const watcher = (config = network()) => stack.watcher(config);

async function newUser() {
  telegramId += 1;
  return stack.newUser(telegramId);
}

async function deposit(txId: string) {
  const rows = await stack.depositRows(
    txId,
    `status, reincluded, block_number, entry_id, reversal_entry_id, ignore_reason,
     amount::text, amount_usd::text`,
  );
  expect(rows.length).toBeLessThanOrEqual(1);
  return rows[0];
}

const posted = (account: string) => stack.posted(account);

const customer = (userId: string) => `liabilities:customers:${userId}`;
const receivable = (userId: string) => `assets:receivables:customers:${userId}`;

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

async function entryLines(entryId: string) {
  return (await ledger.getEntry(entryId))?.postings.map((p) => [
    p.account,
    p.currency,
    p.amount.toString(),
  ]);
}

/** Mines what is pending, solidifies it, and lets the watcher credit it. */
async function mineAndSolidify(w: DepositWatcher) {
  sim.chain.produceBlocks(SOLIDITY_LAG + 2);
  for (let i = 0; i < 2; i += 1) await w.runOnce();
}

/**
 * A reorg deeper than the solidified block: every block above `height` is replaced by a
 * longer branch. `onNewBranch` runs after the fork and one empty block, so what it sends is
 * mined in a later block than before (its transactions go into the next block).
 */
async function forkAt(height: number, w: DepositWatcher, onNewBranch?: () => void) {
  const dropped = sim.chain.headNumber - height;
  sim.chain.reorgTo(height);
  sim.chain.produceBlocks(1);
  onNewBranch?.();
  sim.chain.produceBlocks(dropped + SOLIDITY_LAG);
  for (let i = 0; i < 3; i += 1) await w.runOnce();
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
  sim.chain.produceBlocks(3);
});
afterAll(async () => {
  await stack?.close();
});

describe('Tron reorgs deeper than the solidified block', () => {
  test('a credited deposit a reorg removes is reversed (the spent part owed), credited again when mined again in a later block, and reversed again by a second reorg', async () => {
    const w = watcher();
    await w.runOnce();
    const dave = await newUser();
    const custody = `assets:custody:tron:USDT:${dave.address}`;
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: dave.address,
      amount: 100_000_000n,
    });
    await mineAndSolidify(w);
    const first = await deposit(tx);
    expect(first).toMatchObject({ status: 'credited', reincluded: 0, amount_usd: '100' });
    await spend(dave.id, '70');

    await forkAt(forkHeight, w);
    const reversed = await deposit(tx);
    expect(reversed).toMatchObject({ status: 'reversed', reincluded: 0, entry_id: first.entry_id });
    expect(await entryLines(reversed.reversal_entry_id)).toEqual([
      [custody, 'USDT', '-100'],
      ['equity:trading:USDT', 'USDT', '100'],
      ['equity:trading:USD', 'USD', '-100'],
      [customer(dave.id), 'USD', '30'],
      [receivable(dave.id), 'USD', '70'],
    ]);
    expect(await posted(customer(dave.id))).toBe('0');

    // The very same transaction is broadcast again and mined on the new branch, later.
    const secondFork = sim.chain.headNumber;
    sim.chain.produceBlocks(2);
    sim.chain.rebroadcast(tx);
    await mineAndSolidify(w);
    const second = await deposit(tx);
    expect(second).toMatchObject({
      status: 'credited',
      reincluded: 1,
      amount_usd: '100',
      reversal_entry_id: null,
    });
    expect(second.entry_id).not.toBe(first.entry_id);
    expect(second.block_number).not.toBe(first.block_number);
    expect(await entryLines(second.entry_id)).toEqual([
      [custody, 'USDT', '100'],
      ['equity:trading:USDT', 'USDT', '-100'],
      ['equity:trading:USD', 'USD', '100'],
      [customer(dave.id), 'USD', '-30'],
      [receivable(dave.id), 'USD', '-70'],
    ]);
    expect((await ledger.getEntry(second.entry_id))?.metadata['chain']).toMatchObject({
      txHash: tx,
      blockNumber: second.block_number,
    });
    expect(await posted(customer(dave.id))).toBe('30');
    expect(await posted(receivable(dave.id))).toBe('0');
    // Nothing more on further iterations, nor from a fresh watcher.
    sim.chain.produceBlocks(2);
    await w.runOnce();
    await watcher().runOnce();
    expect(await posted(customer(dave.id))).toBe('30');

    await forkAt(secondFork, w);
    const third = await deposit(tx);
    expect(third).toMatchObject({ status: 'reversed', entry_id: second.entry_id });
    expect((await ledger.getEntry(third.reversal_entry_id))?.reversesEntryId).toBe(second.entry_id);
    expect(await posted(customer(dave.id))).toBe('0');
    expect(await posted(receivable(dave.id))).toBe('70');
    expect(await posted(custody)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a credited deposit whose transaction the new branch mines again where it reverts is reversed, never credited again', async () => {
    const w = watcher();
    const erin = await newUser();
    const payer = sim.chain.account('payer-double-spends');
    sim.chain.setTrxBalance(payer, 10n ** 9n);
    sim.chain.mintToken(sim.chain.usdt, payer, 40_000_000n);
    sim.chain.produceBlocks(1);
    await w.runOnce();
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: payer,
      to: erin.address,
      amount: 40_000_000n,
    });
    await mineAndSolidify(w);
    const first = await deposit(tx);
    expect(first).toMatchObject({ status: 'credited', amount_usd: '40' });

    // On the new branch the payer first sends its USDT elsewhere: the same transaction, mined
    // again after it, reverts.
    await forkAt(forkHeight, w, () => {
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: payer,
        to: sim.chain.account('elsewhere'),
        amount: 40_000_000n,
      });
      sim.chain.rebroadcast(tx);
    });
    const info = sim.chain.transactionInfoJson(tx) as { receipt: { result: string } };
    expect(info.receipt.result).toBe('REVERT');
    await w.runOnce();
    expect(await deposit(tx)).toMatchObject({
      status: 'ignored',
      ignore_reason: 'the transaction failed',
      reincluded: 1,
      entry_id: null,
    });
    expect((await ledger.getReversalOf(first.entry_id))?.reversesEntryId).toBe(first.entry_id);
    expect(await posted(customer(erin.id))).toBe('0');
    expect(await posted(`assets:custody:tron:USDT:${erin.address}`)).toBe('0');
    sim.chain.produceBlocks(3);
    await w.runOnce();
    await watcher().runOnce();
    expect((await deposit(tx)).status).toBe('ignored');
    expect(await posted(customer(erin.id))).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a credited TRX deposit the new branch mines again with the same outcome, in another block, stays credited once', async () => {
    const w = watcher();
    await w.runOnce();
    const frank = await newUser();
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.sendTrx({ from: sender, to: frank.address, amountSun: 8_000_000n });
    await mineAndSolidify(w);
    const first = await deposit(tx);
    expect(first).toMatchObject({ status: 'credited', amount: '8', amount_usd: '2' });

    await forkAt(forkHeight, w, () => sim.chain.rebroadcast(tx));
    await w.runOnce();
    const after = await deposit(tx);
    expect(after).toMatchObject({
      status: 'credited',
      reincluded: 0,
      entry_id: first.entry_id,
      reversal_entry_id: null,
    });
    expect(after.block_number).not.toBe(first.block_number);
    expect(await ledger.getReversalOf(first.entry_id)).toBeNull();
    expect(await posted(customer(frank.id))).toBe('2');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('TRX a contract paid (an internal transaction), credited, then removed by a reorg: reversed; mined again where the payout reverts: never credited again', async () => {
    const w = watcher();
    await w.runOnce();
    const gina = await newUser();
    sim.chain.setTrxBalance(PAYOUT_CONTRACT, 100_000_000n);
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.payoutTrx({
      from: sender,
      nameRecipients: true,
      payouts: [{ to: gina.address, amountSun: 20_000_000n }],
    });
    await mineAndSolidify(w);
    const first = await deposit(tx);
    expect(first).toMatchObject({ status: 'credited', amount: '20', amount_usd: '5' });
    expect(await posted(customer(gina.id))).toBe('5');

    // The new branch: the contract was emptied first, so the very same call reverts there.
    await forkAt(forkHeight, w, () => {
      sim.chain.setTrxBalance(PAYOUT_CONTRACT, 0n);
      sim.chain.rebroadcast(tx);
    });
    await w.runOnce();
    expect(sim.chain.locate(tx)).toBeDefined();
    const after = await deposit(tx);
    expect(after).toMatchObject({ status: 'reversed', entry_id: first.entry_id });
    expect((await ledger.getEntry(after.reversal_entry_id))?.reversesEntryId).toBe(first.entry_id);
    expect(await posted(customer(gina.id))).toBe('0');
    expect(await posted(`assets:custody:tron:TRX:${gina.address}`)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test("a credited deposit the new branch pays to another user's address stays reversed in the first user's history; the other user's is a deposit of its own", async () => {
    const w = watcher(network({ discovery: 'receipts' }));
    const ivan = await newUser();
    const judy = await newUser();
    // A router's call data does not name whom it pays: its state does. The very same
    // transaction pays Ivan on the first branch and Judy on the second.
    const router = sim.chain.deployRouter({ token: sim.chain.usdt, payee: ivan.address });
    sim.chain.mintToken(sim.chain.usdt, router.address, 50_000_000n);
    sim.chain.produceBlocks(1);
    await w.runOnce();
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.callRouter({ router, from: sender, amount: 50_000_000n });
    await mineAndSolidify(w);
    const rows = async () =>
      (
        await database.pool.query(
          `select user_id, address, status, entry_id, reversal_entry_id, amount::text
             from deposits where tx_hash = $1 order by id`,
          [tx],
        )
      ).rows;
    const [first] = await rows();
    expect(first).toMatchObject({ user_id: ivan.id, status: 'credited', amount: '50' });

    await forkAt(forkHeight, w, () => {
      sim.chain.setRouterPayee(router, judy.address);
      sim.chain.rebroadcast(tx);
    });
    await w.runOnce();
    const reversal = await ledger.getReversalOf(first.entry_id);
    expect(reversal?.reversesEntryId).toBe(first.entry_id);
    const after = await rows();
    expect(after).toHaveLength(2);
    expect(after[0]).toMatchObject({
      user_id: ivan.id,
      address: ivan.address,
      status: 'reversed',
      entry_id: first.entry_id,
      reversal_entry_id: reversal!.id,
    });
    expect(after[1]).toMatchObject({ user_id: judy.id, address: judy.address, status: 'credited' });
    expect(after[1].entry_id).not.toBe(first.entry_id);
    expect(await posted(customer(ivan.id))).toBe('0');
    expect(await posted(customer(judy.id))).toBe('50');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a booked USDT sweep a reorg removes is reversed with its TRX fee, and booked again (with the new fee) when mined again in a later block', async () => {
    const treasury = sim.chain.account('treasury');
    const w = watcher(network({ treasuryAddresses: [treasury] }));
    await w.runOnce();
    const mia = await newUser();
    sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: mia.address,
      amount: 10_000_000n,
    });
    sim.chain.setTrxBalance(mia.address, 100_000_000n);
    await mineAndSolidify(w);
    const fees = () => posted('expenses:network-fees:tron');
    const swept = () => posted(`assets:custody:tron:USDT:${treasury}`);
    const feesBefore = new Decimal(await fees());
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: mia.address,
      to: treasury,
      amount: 10_000_000n,
    });
    await mineAndSolidify(w);
    const feeOf = () =>
      new Decimal((sim.chain.transactionInfoJson(tx) as { fee: number }).fee).div(1_000_000);
    const sweep = async () =>
      (
        await database.pool.query(
          `select kind, status, reincluded, entry_id, fee_entry_id from outgoing_transfers where tx_hash = $1`,
          [tx],
        )
      ).rows;
    const [first] = await sweep();
    expect(first).toMatchObject({ kind: 'sweep', status: 'booked', reincluded: 0 });
    expect(new Decimal(await fees()).sub(feesBefore)).toEqual(feeOf());
    expect(await swept()).toBe('10');

    await forkAt(forkHeight, w);
    expect(await sweep()).toEqual([expect.objectContaining({ status: 'orphaned' })]);
    expect(new Decimal(await fees()).sub(feesBefore).toString()).toBe('0');
    expect(await swept()).toBe('0');

    sim.chain.produceBlocks(1);
    sim.chain.rebroadcast(tx);
    await mineAndSolidify(w);
    await w.runOnce();
    const [second] = await sweep();
    expect(second).toMatchObject({ status: 'booked', reincluded: 1 });
    expect(second.entry_id).not.toBe(first.entry_id);
    expect(second.fee_entry_id).not.toBe(first.fee_entry_id);
    expect(new Decimal(await fees()).sub(feesBefore)).toEqual(feeOf());
    expect(await swept()).toBe('10');
    expect(await posted(`assets:custody:tron:USDT:${mia.address}`)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a credited batch payout (two logs) that reverts on the new branch is reversed for both users', async () => {
    const w = watcher();
    await w.runOnce();
    const [gina, hank] = [await newUser(), await newUser()];
    const payer = sim.chain.account('disperse-payer');
    sim.chain.setTrxBalance(payer, 10n ** 9n);
    sim.chain.mintToken(sim.chain.usdt, payer, 30_000_000n);
    sim.chain.produceBlocks(1);
    await w.runOnce();
    const forkHeight = sim.chain.headNumber;
    const tx = sim.chain.disperseToken({
      token: sim.chain.usdt,
      from: payer,
      transfers: [
        { to: gina.address, amount: 10_000_000n },
        { to: hank.address, amount: 20_000_000n },
      ],
    });
    await mineAndSolidify(w);
    expect(await posted(customer(gina.id))).toBe('10');
    expect(await posted(customer(hank.id))).toBe('20');

    await forkAt(forkHeight, w, () => {
      sim.chain.transferToken({
        token: sim.chain.usdt,
        from: payer,
        to: sim.chain.account('elsewhere'),
        amount: 30_000_000n,
      });
      sim.chain.rebroadcast(tx);
    });
    await w.runOnce();
    const { rows } = await database.pool.query(
      `select log_index, status from deposits where tx_hash = $1 order by log_index`,
      [tx],
    );
    expect(rows).toEqual([
      { log_index: 0, status: 'reversed' },
      { log_index: 1, status: 'reversed' },
    ]);
    expect(await posted(customer(gina.id))).toBe('0');
    expect(await posted(customer(hank.id))).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });
});

describe('Tron RPC faults: nothing lost, nothing doubled', () => {
  test('a block list that is not a list is a malformed answer: the watcher fails over to the next host and credits the deposit once', async () => {
    const fallback = await startTronSimulator({ chain: sim.chain });
    try {
      const w = watcher(network({ fallbackHosts: [fallback.url] }));
      await w.runOnce();
      const kim = await newUser();
      const tx = sim.chain.transferToken({
        token: sim.chain.usdt,
        from: sender,
        to: kim.address,
        amount: 6_000_000n,
      });
      // The first host answers getblockbylimitnext with a `null` body, then with `block` an
      // object, not a list.
      const healNull = sim.addFault({
        path: 'wallet/getblockbylimitnext',
        times: 1,
        fault: { kind: 'status', status: 200, body: 'null' },
      });
      const heal = sim.addFault({
        path: 'wallet/getblockbylimitnext',
        fault: { kind: 'status', status: 200, body: { block: { blockID: '00' } } },
      });
      try {
        await mineAndSolidify(w);
      } finally {
        healNull();
        heal();
      }
      expect(await deposit(tx)).toMatchObject({ status: 'credited', amount: '6' });
      expect(fallback.count('wallet/getblockbylimitnext')).toBeGreaterThan(0);
      expect(sim.requests.some((r) => r.fault === 'status' && r.path.endsWith('limitnext'))).toBe(
        true,
      );
      expect(await posted(customer(kim.id))).toBe('6');
    } finally {
      await fallback.close();
    }
  });

  test('through HTTP 429 with Retry-After, 5xx, a truncated body, a missing receipt and a java-tron error body, each deposit is credited exactly once and no block is skipped', async () => {
    const w = watcher(network({ rpcRetries: 1 }));
    await w.runOnce();
    const lee = await newUser();
    const sent: string[] = [];
    sim.resetRequests();
    const faults: Array<[Parameters<TronSimulator['failNext']>[1], string]> = [
      [
        { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
        'wallet/getblockbylimitnext',
      ],
      [{ kind: 'status', status: 503 }, 'wallet/gettransactioninfobyid'],
      [
        { kind: 'status', status: 200, body: '{"block":[{"blockID":"00000' },
        'wallet/getblockbylimitnext',
      ],
      [{ kind: 'empty' }, 'wallet/gettransactioninfobyid'],
      [
        { kind: 'error-body', message: 'class java.lang.NullPointerException : null' },
        'wallet/getnowblock',
      ],
      [{ kind: 'reset' }, 'wallet/getblockbylimitnext'],
      [{ kind: 'status', status: 200, body: 'null' }, 'wallet/gettransactioninfobyid'],
    ];
    // One deposit per block while a fault is armed for the next iteration.
    for (const [fault, path] of faults) {
      sent.push(
        sim.chain.transferToken({
          token: sim.chain.usdt,
          from: sender,
          to: lee.address,
          amount: 1_000_000n,
        }),
      );
      sim.chain.produceBlocks(1);
      sim.failNext(2, fault, path);
      for (let i = 0; i < 5; i += 1) {
        const ok = await w.runOnce().then(
          () => true,
          () => false,
        );
        if (ok) break;
      }
    }
    for (let i = 0; i < 30; i += 1) {
      const statuses = await Promise.all(sent.map(async (tx) => (await deposit(tx))?.status));
      if (statuses.every((status) => status === 'credited')) break;
      sim.chain.produceBlocks(2);
      await w.runOnce().catch(() => {});
    }
    for (const tx of sent)
      expect(await deposit(tx)).toMatchObject({ status: 'credited', amount: '1' });
    expect(sim.requests.filter((r) => r.fault !== null).length).toBe(faults.length * 2);
    await watcher().runOnce();
    expect(await posted(customer(lee.id))).toBe(String(faults.length));
    const { rows } = await database.pool.query(
      `select count(*)::int as n from deposits where user_id = $1`,
      [lee.id],
    );
    expect(rows[0].n).toBe(faults.length);
    expect(await ledger.checkBalances()).toEqual([]);
  });
});
