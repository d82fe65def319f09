import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import type { TestDatabase } from '../support/db.js';
import { MAINNET_USDT, TronChain, type TokenContract } from '../support/tron-sim/chain.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';
import { startTronWatcherStack, type TronWatcherStack } from '../support/tron-sim/stack.js';

/** The same scenarios as EVM, through the real tronweb client against the TronGrid simulator. */

const SOLIDITY_LAG = 19;
/** The network's USDT asset (every network of these tests has it). */
const USDT = {
  symbol: 'USDT',
  contract: MAINNET_USDT,
  decimals: 6,
  price: { fixed: '1' },
  minDeposit: '1',
};

let stack: TronWatcherStack;
let sim: TronSimulator;
let fallback: TronSimulator;
let database: TestDatabase;
let ledger: PostgresLedger;
let sender: string;
let fakeUsdt: TokenContract;
let alice: { id: string; address: string };
let bob: { id: string; address: string };

const network = (overrides: Record<string, unknown> = {}) => stack.network(overrides);
const watcher = (config = network()) => stack.watcher(config);
const newUser = (telegramId: number) => stack.newUser(telegramId);

async function deposit(txId: string) {
  const rows = await stack.depositRows(
    txId,
    'status, amount::text, amount_usd::text, ignore_reason, confirmations',
  );
  return rows[0];
}

async function cursorNumber(): Promise<bigint> {
  const { rows } = await database.pool.query<{ block_number: string }>(
    `select block_number::text from watcher_cursors where network = 'tron'`,
  );
  return BigInt(rows[0]!.block_number);
}

const posted = (userId: string) => stack.posted(`liabilities:customers:${userId}`);

beforeAll(async () => {
  stack = await startTronWatcherStack({
    solidityLag: SOLIDITY_LAG,
    senderTrx: 10n ** 12n,
    network: () => ({
      apiKey: 'test-key',
      pollIntervalMs: 100,
      treasuryAddresses: [stack.sim.chain.account('treasury')],
      assets: [USDT],
    }),
    adapterOptions: { demoteMs: 50 },
  });
  ({ sim, database, ledger, sender } = stack);
  fallback = await startTronSimulator({ chain: sim.chain });
  fakeUsdt = sim.chain.deployToken({ symbol: 'USDT', decimals: 6 });
  sim.chain.mintToken(fakeUsdt, sender, 10n ** 15n);
  sim.chain.produceBlocks(3);
  alice = await newUser(8001);
  bob = await newUser(8002);
});
afterAll(async () => {
  await fallback?.close();
  await stack?.close();
});

describe('Tron deposits', () => {
  test('USDT to two users is credited once, exactly, when its block is solidified', async () => {
    const w = watcher();
    await w.runOnce();
    const a = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: alice.address,
      amount: 12_345_678n,
    });
    const b = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: bob.address,
      amount: 100_000_000n,
    });
    sim.chain.produceBlocks(1);
    await w.runOnce();
    expect((await deposit(a)).status).toBe('seen');
    sim.chain.produceBlocks(SOLIDITY_LAG - 1);
    await w.runOnce();
    expect((await deposit(a)).status).toBe('confirming');
    sim.chain.produceBlocks(1);
    await w.runOnce();
    expect(await deposit(a)).toMatchObject({
      status: 'credited',
      amount: '12.345678',
      amount_usd: '12.345678',
    });
    expect(await deposit(b)).toMatchObject({
      status: 'credited',
      amount: '100',
      amount_usd: '100',
    });
    sim.chain.produceBlocks(5);
    await w.runOnce();
    await watcher().runOnce();
    expect(await posted(alice.id)).toBe('12.345678');
    expect(await posted(bob.id)).toBe('100');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a token with the same symbol from another contract is ignored; so is a failed transfer', async () => {
    const w = watcher();
    await w.runOnce();
    const before = await posted(alice.id);
    const fake = sim.chain.transferToken({
      token: fakeUsdt,
      from: sender,
      to: alice.address,
      amount: 50_000_000n,
    });
    const failed = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: alice.address,
      amount: 5_000_000n,
      fail: true,
    });
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    await w.runOnce();
    expect(await deposit(fake)).toMatchObject({ status: 'ignored' });
    expect((await deposit(fake)).ignore_reason).toMatch(/not an accepted asset/);
    expect(await deposit(failed)).toMatchObject({
      status: 'ignored',
      ignore_reason: 'the transaction failed',
    });
    expect(await posted(alice.id)).toBe(before);
  });

  test('a deposit reorged away before it is solidified is orphaned, never credited', async () => {
    const w = watcher();
    await w.runOnce();
    const before = await posted(bob.id);
    const doomed = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: sender,
      to: bob.address,
      amount: 9_000_000n,
    });
    sim.chain.produceBlocks(2);
    await w.runOnce();
    expect((await deposit(doomed)).status).toBe('seen');
    sim.chain.reorg(3);
    sim.chain.produceBlocks(4);
    const report = await w.runOnce();
    expect(report.forkPoint).not.toBeNull();
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    await w.runOnce();
    expect((await deposit(doomed)).status).toBe('orphaned');
    expect(await posted(bob.id)).toBe(before);
  });

  test('a transfer mined again on a new branch where it reverts is never credited', async () => {
    const w = watcher();
    const payer = sim.chain.account('payer-reverts-later');
    sim.chain.setTrxBalance(payer, 10n ** 9n);
    sim.chain.produceBlocks(1);
    await w.runOnce();
    const before = await posted(bob.id);
    // The tokens arrive in the head block; the reorg below drops that block too.
    sim.chain.mintToken(sim.chain.usdt, payer, 7_000_000n);
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: payer,
      to: bob.address,
      amount: 7_000_000n,
    });
    sim.chain.produceBlocks(1);
    await w.runOnce();
    expect(await deposit(tx)).toMatchObject({ status: 'seen', amount: '7' });
    // The new branch includes the same transaction, now uncovered: REVERT.
    sim.chain.reorg(2, { requeue: true });
    sim.chain.produceBlocks(1);
    const receipt = sim.chain.transactionInfoJson(tx) as { receipt: { result: string } };
    expect(receipt.receipt.result).toBe('REVERT');
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    expect((await w.runOnce()).forkPoint).not.toBeNull();
    await w.runOnce();
    expect(await deposit(tx)).toMatchObject({
      status: 'ignored',
      ignore_reason: 'the transaction failed',
    });
    expect(await posted(bob.id)).toBe(before);
    expect(sim.chain.tokenBalance(sim.chain.usdt, bob.address)).toBe(
      BigInt(new Decimal(before).mul(1_000_000).toFixed()),
    );
  });

  test('a transfer that reverted, mined again on a new branch where it succeeds, is credited', async () => {
    const carol = await newUser(8003);
    const w = watcher();
    const payer = sim.chain.account('payer-succeeds-later');
    sim.chain.setTrxBalance(payer, 10n ** 9n);
    sim.chain.produceBlocks(1);
    await w.runOnce();
    const before = await posted(carol.id);
    const tx = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: payer,
      to: carol.address,
      amount: 3_000_000n,
    });
    sim.chain.produceBlocks(1);
    await w.runOnce();
    expect(await deposit(tx)).toMatchObject({ status: 'ignored' });
    // On the new branch the payer holds the tokens before the transaction runs.
    sim.chain.reorg(1, { requeue: true });
    sim.chain.mintToken(sim.chain.usdt, payer, 3_000_000n);
    sim.chain.produceBlocks(1);
    const receipt = sim.chain.transactionInfoJson(tx) as { receipt: { result: string } };
    expect(receipt.receipt.result).toBe('SUCCESS');
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    expect((await w.runOnce()).forkPoint).not.toBeNull();
    await w.runOnce();
    expect(await deposit(tx)).toMatchObject({
      status: 'credited',
      amount: '3',
      amount_usd: '3',
      ignore_reason: null,
    });
    expect(await posted(carol.id)).toBe(new Decimal(before).add(3).toString());
  });

  test('a sweep to the treasury moves custody to custody and books the energy fee', async () => {
    const w = watcher();
    await w.runOnce();
    sim.chain.setTrxBalance(alice.address, 100_000_000n);
    const sweep = sim.chain.transferToken({
      token: sim.chain.usdt,
      from: alice.address,
      to: sim.chain.account('treasury'),
      amount: 10_000_000n,
    });
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    await w.runOnce();
    const { rows } = await database.pool.query(
      `select kind, status, fee_base_units::text as fee from outgoing_transfers where tx_hash = $1`,
      [sweep],
    );
    expect(rows[0]).toMatchObject({ kind: 'sweep', status: 'booked' });
    const treasury = await ledger.getBalance(
      `assets:custody:tron:USDT:${sim.chain.account('treasury')}`,
    );
    expect(treasury.posted.toString()).toBe('10');
    const custody = await ledger.getBalance(`assets:custody:tron:USDT:${alice.address}`);
    expect(custody.posted.toString()).toBe('2.345678');
    const fees = await ledger.getBalance('expenses:network-fees:tron');
    expect(fees.currency).toBe('TRX');
    expect(fees.posted.mul(1_000_000).toString()).toBe(rows[0].fee);
  });

  test('TRX from the treasury to a deposit address is booked custody to custody, never credited; a customer TRX deposit beside it is', async () => {
    const treasury = sim.chain.account('treasury');
    const withTrx = network({
      assets: [USDT, { symbol: 'TRX', native: true, decimals: 6, price: { fixed: '0.25' } }],
    });
    const w = watcher(withTrx);
    await w.runOnce();
    const erin = await newUser(8005);
    sim.chain.setTrxBalance(treasury, 1_000_000_000n);
    const topUp = sim.chain.sendTrx({ from: treasury, to: erin.address, amountSun: 30_000_000n });
    const paid = sim.chain.sendTrx({ from: sender, to: erin.address, amountSun: 8_000_000n });
    sim.chain.produceBlocks(SOLIDITY_LAG + 2);
    for (let i = 0; i < 2; i += 1) await w.runOnce();

    // Only the customer's 8 TRX is a deposit: 8 x 0.25 = 2 USD.
    expect(await deposit(paid)).toMatchObject({ status: 'credited', amount_usd: '2' });
    expect(await deposit(topUp)).toBeUndefined();
    expect(await posted(erin.id)).toBe('2');
    const { rows } = await database.pool.query(
      `select kind, status, from_address, to_address, amount::text, fee_base_units::text as fee, entry_id
         from outgoing_transfers where tx_hash = $1`,
      [topUp],
    );
    expect(rows).toEqual([
      expect.objectContaining({
        kind: 'topup',
        status: 'booked',
        from_address: treasury,
        to_address: erin.address,
        amount: '30',
      }),
    ]);
    const entry = await ledger.getEntry(rows[0].entry_id);
    expect(entry?.postings.map((p) => [p.account, p.currency, p.amount.toString()])).toEqual([
      [`assets:custody:tron:TRX:${erin.address}`, 'TRX', '30'],
      [`assets:custody:tron:TRX:${treasury}`, 'TRX', '-30'],
    ]);
    // The simulator's TRX transfers burn no TRX (free bandwidth): no fee to book.
    expect(rows[0].fee).toBe('0');
    const custody = await ledger.getBalance(`assets:custody:tron:TRX:${erin.address}`);
    expect(custody.posted.toString()).toBe('38');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a rate-limiting first host and a dead one: the watcher fails over and credits', async () => {
    sim.rateLimit({ perSecond: 1, status: 429 });
    try {
      const w = watcher(
        network({
          fullHost: 'http://127.0.0.1:9',
          fallbackHosts: [sim.url, fallback.url],
          rpcRetries: 3,
        }),
      );
      await w.runOnce();
      const tx = sim.chain.transferToken({
        token: sim.chain.usdt,
        from: sender,
        to: alice.address,
        amount: 2_000_000n,
      });
      sim.chain.produceBlocks(SOLIDITY_LAG + 2);
      await w.runOnce();
      expect((await deposit(tx)).status).toBe('credited');
    } finally {
      sim.rateLimit(null);
    }
  });

  test('a fallback host a few blocks behind is no reorg: the cursor never goes back', async () => {
    const behind = await startTronSimulator({ chain: sim.chain });
    behind.setHeadLag(5);
    try {
      const w = watcher(network({ fallbackHosts: [behind.url] }));
      await w.runOnce();
      const tx = sim.chain.transferToken({
        token: sim.chain.usdt,
        from: sender,
        to: bob.address,
        amount: 4_000_000n,
      });
      for (let i = 0; i < 6; i++) {
        sim.chain.produceBlocks(1);
        await w.runOnce();
      }
      expect((await deposit(tx)).status).toBe('confirming');
      const before = await posted(bob.id);
      const cursorBefore = await cursorNumber();
      // The first host fails; the fallback answers, 5 blocks behind the chain.
      const heal = sim.addFault({ fault: { kind: 'status', status: 502 } });
      sim.chain.produceBlocks(1);
      const report = await w.runOnce();
      heal();
      expect(report.forkPoint).toBeNull();
      expect(await cursorNumber()).toBeGreaterThanOrEqual(cursorBefore);
      const { rows } = await database.pool.query(
        `select count(*)::int as n from deposits where network = 'tron' and needs_recheck`,
      );
      expect(rows[0].n).toBe(0);
      sim.chain.produceBlocks(SOLIDITY_LAG + 2);
      await w.runOnce();
      expect(await deposit(tx)).toMatchObject({ status: 'credited', amount: '4' });
      expect(await posted(bob.id)).toBe(new Decimal(before).add(4).toString());
    } finally {
      await behind.close();
    }
  });

  test('a range a fallback host serves from another fork than the cursor is refused: a deposit only that fork had is orphaned', async () => {
    // Two nodes that agree up to a block, then each follow their own fork (as behind one
    // load balancer, or a primary and a fallback): A has Dave's deposit, B (the fork that
    // wins) does not.
    const chains = [
      new TronChain({ solidityLag: SOLIDITY_LAG }),
      new TronChain({ solidityLag: SOLIDITY_LAG }),
    ];
    const payer = chains[0]!.account('fork-sender'); // the same address on both
    for (const chain of chains) {
      chain.mintToken(chain.usdt, payer, 10n ** 12n);
      chain.setTrxBalance(payer, 10n ** 12n);
      chain.produceBlocks(3);
    }
    const [chainA, chainB] = chains as [TronChain, TronChain];
    expect(chainA.head.blockID).toBe(chainB.head.blockID);
    const a = await startTronSimulator({ chain: chainA });
    const b = await startTronSimulator({ chain: chainB });
    try {
      const dave = await newUser(8004);
      const config = network({
        name: 'tron-forks',
        fullHost: a.url,
        fallbackHosts: [b.url],
        startBlock: chainA.headNumber,
      });
      const w = watcher(config);
      await w.runOnce();
      const tx = chainA.transferToken({
        token: chainA.usdt,
        from: payer,
        to: dave.address,
        amount: 5_000_000n,
      });
      chainA.produceBlocks(1);
      chainB.produceBlocks(1);
      expect(chainA.head.blockID).not.toBe(chainB.head.blockID);
      await w.runOnce(); // A: the deposit is seen, the cursor is A's block
      expect((await deposit(tx)).status).toBe('seen');
      chainA.produceBlocks(2);
      chainB.produceBlocks(3);
      // A still agrees with the cursor, but cannot serve the range after it: B scans it.
      const healScan = a.addFault({
        path: 'wallet/getblockbylimitnext',
        fault: { kind: 'status', status: 500 },
      });
      await w.runOnce().catch(() => {});
      healScan();
      // A goes away; B's fork is the chain from now on.
      a.addFault({ fault: { kind: 'reset' } });
      chainB.produceBlocks(SOLIDITY_LAG + 2);
      await w.runOnce();
      await w.runOnce();
      expect((await deposit(tx)).status).toBe('orphaned');
      expect(await posted(dave.id)).toBe('0');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
