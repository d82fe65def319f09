import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { encodeFunctionData, erc20Abi, keccak256, toHex, type Address, type Hex } from 'viem';
import { mnemonicToAccount, privateKeyToAccount } from 'viem/accounts';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { networkSchema, type EvmNetworkConfig } from '../../chain-watchers/config.js';
import { createEvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { assignDepositAddress } from '../../chain-watchers/pipeline/depositAddresses.js';
import { createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startFailingRpcServer, startRpcProxy } from '../support/evm/rpcServers.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { Kysely, PostgresDialect } from 'kysely';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { eraseAccount, ERASURE_CONFIRMATION } from '../../src/account/eraseAccount.js';
import { kyselyOver } from '../support/book.js';

const MNEMONIC = 'test test test test test test test test test test test junk';
const xpubs = mnemonicToAccountXpubs(MNEMONIC);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

let devnet: Devnet;
let database: TestDatabase;
let ledger: PostgresLedger;
let db: Kysely<WatcherTables>;
let usdt: Address;
let dai: Address;
let fakeUsdt: Address;
let feed: Address;
let alice: { id: string; address: Address };
let bob: { id: string; address: Address };

async function newUser(telegramId: number) {
  const { rows } = await database.pool.query<{ id: string }>(
    'insert into users (telegram_id) values ($1) returning id',
    [telegramId],
  );
  const id = rows[0]!.id;
  const { address } = await assignDepositAddress(db, { userId: id, family: 'evm', xpubs });
  return { id, address: address as Address };
}

function network(overrides: Record<string, unknown> = {}): EvmNetworkConfig {
  return networkSchema.parse({
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
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' }, minDeposit: '1' },
      { symbol: 'DAI', contract: dai, decimals: 18, price: { fixed: '0.9995' } },
      {
        symbol: 'ETH',
        native: true,
        decimals: 18,
        price: { chainlink: { network: 'devnet', feed, maxAgeS: 100_000 } },
      },
    ],
    ...overrides,
  }) as EvmNetworkConfig;
}

function watcher(config = network()) {
  const adapter = createEvmAdapter(config, { logger: quiet });
  return new DepositWatcher({
    network: config,
    adapter,
    ledger,
    pool: database.pool,
    priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
    logger: quiet,
  });
}

async function depositRows() {
  const { rows } = await database.pool.query(
    `select user_id, asset, amount::text, status, confirmations, amount_usd::text, rate::text, rate_source, ignore_reason, tx_hash, log_index
       from deposits order by id`,
  );
  return rows;
}

async function usdBalance(userId: string): Promise<string> {
  return (await postedBalance(`liabilities:customers:${userId}`)).toString();
}

async function postedBalance(account: string): Promise<Decimal> {
  const balance = await ledger.getBalance(account).catch(() => null);
  return balance?.posted ?? new Decimal(0);
}

/**
 * Signs a transaction without sending it, so that the very same transaction can be broadcast
 * again after a reorg dropped it (as a wallet or a mempool would).
 */
async function signTransaction(
  privateKey: Hex,
  tx: { to: Address; data?: Hex; value?: bigint; gas: bigint },
): Promise<Hex> {
  const signer = privateKeyToAccount(privateKey);
  return signer.signTransaction({
    type: 'eip1559',
    chainId: 1337,
    nonce: await devnet.client.getTransactionCount({
      address: signer.address,
      blockTag: 'pending',
    }),
    maxFeePerGas: 50_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    ...tx,
  });
}

/**
 * A USDT transfer to `to`, signed once by a freshly funded sender, and the snapshot taken before
 * it: after a reorg to that snapshot the very same transaction can be sent (mined) again.
 */
async function signedUsdtTransfer(w: DepositWatcher, to: Address, amountBaseUnits: bigint) {
  const sender = devnet.account(3);
  await devnet.transferToken(usdt, devnet.account(0), sender.address, amountBaseUnits);
  await devnet.mine(4);
  await w.runOnce();
  const beforeTransfer = await devnet.snapshot();
  const raw = await signTransaction(sender.privateKey, {
    to: usdt,
    data: encodeFunctionData({
      abi: erc20Abi,
      functionName: 'transfer',
      args: [to, amountBaseUnits],
    }),
    gas: 500_000n,
  });
  const txHash = keccak256(raw);
  /** Sends (again) and mines it with its confirmations; the watcher credits it. */
  const mineIt = async () => {
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
  };
  const deposit = async () =>
    (
      await database.pool.query(
        `select status, reincluded, entry_id, reversal_entry_id, amount_usd::text from deposits where tx_hash = $1`,
        [txHash],
      )
    ).rows[0];
  return { beforeTransfer, txHash, mineIt, deposit };
}

/** Spends `amount` of a customer's balance (an admin debit). */
async function spend(userId: string, amount: string) {
  await ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: `liabilities:customers:${userId}`, amount },
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

/** A chain without the blocks mined since `snapshot`, longer than the one it replaces. */
async function reorgTo(snapshot: Hex, w: DepositWatcher) {
  await devnet.revert(snapshot);
  await devnet.mine(12, { increaseTimeS: 11 });
  for (let i = 0; i < 3; i += 1) await w.runOnce();
}

beforeAll(async () => {
  devnet = await startDevnet();
  database = await createTestDatabase();
  ledger = await openLedger(database.pool, {});
  await database.pool.query(
    `insert into ledger_currencies (code, scale) values ('DAI', 18) on conflict do nothing`,
  );
  await ledger.init();
  db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: database.newPool(2) }) });
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  dai = await devnet.deployToken(18, { symbol: 'DAI' });
  fakeUsdt = await devnet.deployToken(6, { symbol: 'USDT' });
  feed = await devnet.deployAggregator(8, 'ETH / USD');
  await devnet.setRound(feed, 312_345_678_901n, await devnet.blockTimestamp());
  const funder = devnet.account(0);
  await devnet.mint(usdt, funder.address, 1_000_000_000_000n);
  await devnet.mint(dai, funder.address, 10n ** 24n);
  await devnet.mint(fakeUsdt, funder.address, 1_000_000_000_000n);
  alice = await newUser(9001);
  bob = await newUser(9002);
});
afterAll(async () => {
  await db?.destroy();
  await ledger?.close();
  await database?.drop();
  await devnet?.close();
});

describe('EVM deposits', () => {
  test('USDT (6 decimals), DAI (18) and ETH to two users are each credited once, exactly, after 3 confirmations', async () => {
    const funder = devnet.account(0);
    const w = watcher();
    await w.runOnce();
    await devnet.transferToken(usdt, funder, alice.address, 25_500_000n); // 25.5 USDT
    await devnet.transferToken(dai, funder, alice.address, 1_234_567_890_123_456_789n); // 1.234567890123456789 DAI
    const eth = await devnet.sendEth(funder, bob.address, 1_500_000_000_000_000n); // 0.0015 ETH
    // Instamine: one block each. The USDT block has 3 confirmations at once, DAI 2, ETH 1.
    let report = await w.runOnce();
    expect(report.credited).toBe(1);
    expect((await depositRows()).map((d) => [d.asset, d.status, d.confirmations])).toEqual([
      ['USDT', 'credited', 3],
      ['DAI', 'seen', 2],
      ['ETH', 'seen', 1],
    ]);
    await devnet.mine(1);
    report = await w.runOnce();
    expect((await depositRows()).map((d) => [d.asset, d.status])).toEqual([
      ['USDT', 'credited'],
      ['DAI', 'credited'],
      ['ETH', 'confirming'],
    ]);
    await devnet.mine(1);
    report = await w.runOnce();
    expect(report.credited).toBe(1);
    const rows = await depositRows();
    expect(rows.map((d) => [d.asset, d.amount, d.status, d.rate_source])).toEqual([
      ['USDT', '25.5', 'credited', 'fixed'],
      ['DAI', '1.234567890123456789', 'credited', 'fixed'],
      ['ETH', '0.0015', 'credited', 'chainlink'],
    ]);
    // ETH at 3123.45678901 USD: 0.0015 x 3123.45678901 = 4.685185183515 exactly.
    expect(rows[2].rate).toBe('3123.45678901');
    expect(rows[2].amount_usd).toBe('4.685185183515');
    // DAI at 0.9995: 1.234567890123456789 x 0.9995 = 1.2339506061783950... rounded half-even to 18 digits.
    const daiUsd = new Decimal('1.234567890123456789')
      .mul('0.9995')
      .toDecimalPlaces(18, Decimal.ROUND_HALF_EVEN);
    expect(rows[1].amount_usd).toBe(daiUsd.toString());
    expect(await usdBalance(alice.id)).toBe(new Decimal('25.5').add(daiUsd).toString());
    expect(await usdBalance(bob.id)).toBe('4.685185183515');
    const entry = await ledger.getEntry(
      (await database.pool.query(`select entry_id from deposits where asset = 'ETH'`)).rows[0]
        .entry_id,
    );
    expect(entry?.postings.map((p) => [p.account, p.currency, p.amount.toString()])).toEqual([
      [`assets:custody:devnet:ETH:${bob.address}`, 'ETH', '0.0015'],
      ['equity:trading:ETH', 'ETH', '-0.0015'],
      ['equity:trading:USD', 'USD', '4.685185183515'],
      [`liabilities:customers:${bob.id}`, 'USD', '-4.685185183515'],
    ]);
    expect(entry?.metadata).toMatchObject({
      rate: '3123.45678901',
      rateSource: 'chainlink',
      chain: { network: 'devnet', txHash: eth.txHash, logIndex: -1 },
    });
    expect((entry?.metadata['priceDetails'] as Record<string, string>)['feed']).toBe(feed);

    // More iterations credit nothing twice.
    await devnet.mine(5);
    await w.runOnce();
    await watcher().runOnce();
    expect((await depositRows()).filter((d) => d.status === 'credited')).toHaveLength(3);
    expect(await usdBalance(bob.id)).toBe('4.685185183515');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a token with the same symbol from another contract is recorded as ignored, never credited', async () => {
    const w = watcher();
    await w.runOnce();
    const before = await usdBalance(alice.id);
    const sent = await devnet.transferToken(
      fakeUsdt,
      devnet.account(0),
      alice.address,
      99_000_000n,
    );
    await devnet.mine(5);
    await w.runOnce();
    const row = (await depositRows()).find((d) => d.tx_hash === sent.txHash);
    expect(row).toMatchObject({ status: 'ignored', asset: null });
    expect(row?.ignore_reason).toMatch(/not an accepted asset/);
    expect(await usdBalance(alice.id)).toBe(before);
  });

  test('a deposit below the minimum is recorded as ignored', async () => {
    const w = watcher();
    await w.runOnce();
    const sent = await devnet.transferToken(usdt, devnet.account(0), bob.address, 999_999n);
    await devnet.mine(5);
    await w.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === sent.txHash)).toMatchObject({
      status: 'ignored',
      ignore_reason: 'below the minimum of 1 USDT',
    });
  });

  test('a reverted transfer is not credited', async () => {
    const w = watcher();
    await w.runOnce();
    const before = await usdBalance(bob.id);
    const refuser = devnet.account(1);
    await devnet.setTransfersBlocked(usdt, true);
    const failed = await devnet.transferToken(usdt, devnet.account(0), bob.address, 5_000_000n, {
      gas: 200_000n,
    });
    await devnet.setTransfersBlocked(usdt, false);
    const failedEth = await devnet.sendEth(refuser, bob.address, 10n ** 15n);
    expect(failed.status).toBe('reverted');
    await devnet.mine(5);
    await w.runOnce();
    const rows = await depositRows();
    expect(rows.find((d) => d.tx_hash === failed.txHash)).toBeUndefined();
    // The ETH one succeeded (bob's address accepts ETH): it is credited; the reverted token transfer left no trace.
    expect(rows.find((d) => d.tx_hash === failedEth.txHash)?.status).toBe('credited');
    expect(new Decimal(await usdBalance(bob.id)).sub(before).toString()).toBe(
      new Decimal('0.001').mul('3123.45678901').toString(),
    );
  });

  test('a deposit reorged away before its confirmations is orphaned and never credited', async () => {
    const w = watcher();
    await w.runOnce();
    const before = await usdBalance(alice.id);
    const snapshot = await devnet.snapshot();
    const doomed = await devnet.transferToken(usdt, devnet.account(0), alice.address, 7_000_000n);
    await devnet.mine(1);
    await w.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === doomed.txHash)?.status).toBe('seen');
    // A different chain at the same heights: the transfer is gone.
    await devnet.revert(snapshot);
    await devnet.mine(3, { increaseTimeS: 7 });
    const report = await w.runOnce();
    expect(report.forkPoint).not.toBeNull();
    await devnet.mine(3);
    await w.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === doomed.txHash)?.status).toBe('orphaned');
    expect(await usdBalance(alice.id)).toBe(before);
  });

  test('a credited deposit that a deep reorg removes is reversed, the spent part booked as a receivable', async () => {
    const w = watcher();
    await w.runOnce();
    const before = new Decimal(await usdBalance(bob.id));
    const snapshot = await devnet.snapshot();
    const doomed = await devnet.transferToken(usdt, devnet.account(0), bob.address, 40_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === doomed.txHash)?.status).toBe('credited');
    // Bob spends part of it before the reorg.
    const spend = before.add(30);
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: `liabilities:customers:${bob.id}`, amount: spend.toString() },
        { account: 'expenses:promotions', amount: spend.neg().toString() },
      ],
    });
    await devnet.revert(snapshot);
    await devnet.mine(8, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    const row = (
      await database.pool.query(
        `select status, reversal_entry_id from deposits where tx_hash = $1`,
        [doomed.txHash],
      )
    ).rows[0];
    expect(row.status).toBe('reversed');
    const reversal = await ledger.getEntry(row.reversal_entry_id);
    expect(reversal?.postings.map((p) => [p.account, p.amount.toString()])).toEqual([
      [`assets:custody:devnet:USDT:${bob.address}`, '-40'],
      ['equity:trading:USDT', '40'],
      ['equity:trading:USD', '-40'],
      [`liabilities:customers:${bob.id}`, '10'],
      [`assets:receivables:customers:${bob.id}`, '30'],
    ]);
    expect(await usdBalance(bob.id)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a credited deposit that a reorg removed is credited again when its transaction is mined again, and reversed again by a second reorg', async () => {
    const w = watcher();
    await w.runOnce();
    const before = new Decimal(await usdBalance(bob.id));
    const gained = async () => new Decimal(await usdBalance(bob.id)).sub(before).toString();
    const sender = devnet.account(3);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    const raw = await signTransaction(sender.privateKey, {
      to: usdt,
      data: encodeFunctionData({
        abi: erc20Abi,
        functionName: 'transfer',
        args: [bob.address, 40_000_000n],
      }),
      gas: 500_000n,
    });
    const txHash = await devnet.rpc<Hex>('eth_sendRawTransaction', [raw]);
    await devnet.mine(4);
    await w.runOnce();
    const deposit = async () =>
      (
        await database.pool.query(
          `select status, reincluded, block_number, entry_id, reversal_entry_id, amount_usd::text
             from deposits where tx_hash = $1`,
          [txHash],
        )
      ).rows[0];
    const first = await deposit();
    expect(first).toMatchObject({ status: 'credited', reincluded: 0, amount_usd: '40' });
    expect(await gained()).toBe('40');

    await reorgTo(beforeTransfer, w);
    expect(await deposit()).toMatchObject({ status: 'reversed', reincluded: 0 });
    expect(await gained()).toBe('0');

    // The dropped transaction is broadcast again and mined on the new chain, in another block.
    const beforeResend = await devnet.snapshot();
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const second = await deposit();
    expect(second).toMatchObject({
      status: 'credited',
      reincluded: 1,
      amount_usd: '40',
      reversal_entry_id: null,
    });
    expect(second.entry_id).not.toBe(first.entry_id);
    expect(await gained()).toBe('40');
    // The new credit names the block it is in now; the first one and its reversal stay.
    const entry = await ledger.getEntry(second.entry_id);
    expect(entry?.metadata['chain']).toMatchObject({ txHash, blockNumber: second.block_number });
    expect(second.block_number).not.toBe(first.block_number);
    expect((await ledger.getEntry(first.entry_id))?.id).toBe(first.entry_id);

    await reorgTo(beforeResend, w);
    const third = await deposit();
    expect(third).toMatchObject({ status: 'reversed', entry_id: second.entry_id });
    expect((await ledger.getEntry(third.reversal_entry_id))?.reversesEntryId).toBe(second.entry_id);
    expect(await gained()).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a re-credited deposit first repays the receivable its reversal booked: the customer gets the rest, an unrelated receivable stays', async () => {
    const w = watcher();
    await w.runOnce();
    const dave = await newUser(9004);
    const customer = `liabilities:customers:${dave.id}`;
    const receivable = `assets:receivables:customers:${dave.id}`;
    const custody = `assets:custody:devnet:USDT:${dave.address}`;
    // A call settled above its hold that dave's balance could not cover: 5 owed, on the same account.
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '1' },
        { account: customer, amount: '-1' },
      ],
    });
    const { holdId } = await ledger.createHold({
      debitAccount: customer,
      creditAccount: 'revenue:usage',
      amount: '1',
    });
    await ledger.postHold({
      holdId,
      amount: '6',
      allowOverHold: true,
      shortfallAccount: receivable,
    });
    expect((await postedBalance(receivable)).toString()).toBe('5');

    const transfer = await signedUsdtTransfer(w, dave.address, 100_000_000n);
    await transfer.mineIt();
    const first = await transfer.deposit();
    expect(first).toMatchObject({ status: 'credited', amount_usd: '100' });
    expect(await usdBalance(dave.id)).toBe('100');
    await spend(dave.id, '70');

    await reorgTo(transfer.beforeTransfer, w);
    const reversed = await transfer.deposit();
    expect(reversed).toMatchObject({ status: 'reversed', reincluded: 0 });
    expect(await entryLines(reversed.reversal_entry_id)).toEqual([
      [custody, 'USDT', '-100'],
      ['equity:trading:USDT', 'USDT', '100'],
      ['equity:trading:USD', 'USD', '-100'],
      [customer, 'USD', '30'],
      [receivable, 'USD', '70'],
    ]);
    expect(await usdBalance(dave.id)).toBe('0');
    expect((await postedBalance(receivable)).toString()).toBe('75');

    // Mined again: the 70 its reversal booked is repaid first, dave is credited the other 30.
    const beforeResend = await devnet.snapshot();
    await transfer.mineIt();
    const second = await transfer.deposit();
    expect(second).toMatchObject({ status: 'credited', reincluded: 1, amount_usd: '100' });
    expect(await entryLines(second.entry_id)).toEqual([
      [custody, 'USDT', '100'],
      ['equity:trading:USDT', 'USDT', '-100'],
      ['equity:trading:USD', 'USD', '100'],
      [customer, 'USD', '-30'],
      [receivable, 'USD', '-70'],
    ]);
    expect((await ledger.getEntry(second.entry_id))?.metadata).toMatchObject({
      receivableRepaid: { account: receivable, amount: '70', amountMax: '70' },
      previousReversal: { entryId: reversed.reversal_entry_id },
    });
    expect(await usdBalance(dave.id)).toBe('30');
    expect((await ledger.getBalance(customer)).available.toString()).toBe('30');
    // The receivable from the call is not this deposit's to repay.
    expect((await postedBalance(receivable)).toString()).toBe('5');
    expect((await postedBalance(custody)).toString()).toBe('100');
    // Running the watcher again writes nothing more.
    await devnet.mine(2);
    await w.runOnce();
    await watcher().runOnce();
    expect(await usdBalance(dave.id)).toBe('30');
    expect((await postedBalance(receivable)).toString()).toBe('5');

    // Dave spends 10 of the 30; a second reorg removes the deposit again. Its reversal gives the
    // repayment back to the receivable (70) and books what dave cannot cover of the 30 (10).
    await spend(dave.id, '10');
    await reorgTo(beforeResend, w);
    const third = await transfer.deposit();
    expect(third).toMatchObject({ status: 'reversed', entry_id: second.entry_id });
    expect(await entryLines(third.reversal_entry_id)).toEqual([
      [custody, 'USDT', '-100'],
      ['equity:trading:USDT', 'USDT', '100'],
      ['equity:trading:USD', 'USD', '-100'],
      [customer, 'USD', '20'],
      [receivable, 'USD', '10'],
      [receivable, 'USD', '70'],
    ]);
    expect(await usdBalance(dave.id)).toBe('0');
    expect((await postedBalance(receivable)).toString()).toBe('85');
    expect((await postedBalance(custody)).toString()).toBe('0');

    // Mined a third time: the 80 that reversal booked is repaid, dave gets the other 20.
    await transfer.mineIt();
    const fourth = await transfer.deposit();
    expect(fourth).toMatchObject({ status: 'credited', reincluded: 2 });
    expect(await entryLines(fourth.entry_id)).toEqual([
      [custody, 'USDT', '100'],
      ['equity:trading:USDT', 'USDT', '-100'],
      ['equity:trading:USD', 'USD', '100'],
      [customer, 'USD', '-20'],
      [receivable, 'USD', '-80'],
    ]);
    expect(await usdBalance(dave.id)).toBe('20');
    expect((await postedBalance(receivable)).toString()).toBe('5');
    expect(await ledger.checkBalances()).toEqual([]);
    const totals = (await ledger.trialBalance()).totals;
    expect(totals.map((t) => [t.currency, t.net.toString()])).toEqual(
      totals.map((t) => [t.currency, '0']),
    );
  });

  test('a re-credited deposit whose customer had spent none of it is credited in full', async () => {
    const w = watcher();
    await w.runOnce();
    const erin = await newUser(9005);
    const transfer = await signedUsdtTransfer(w, erin.address, 100_000_000n);
    await transfer.mineIt();
    await reorgTo(transfer.beforeTransfer, w);
    expect(await transfer.deposit()).toMatchObject({ status: 'reversed' });
    expect(await usdBalance(erin.id)).toBe('0');
    await transfer.mineIt();
    const again = await transfer.deposit();
    expect(again).toMatchObject({ status: 'credited', reincluded: 1, amount_usd: '100' });
    expect(await entryLines(again.entry_id)).toEqual([
      [`assets:custody:devnet:USDT:${erin.address}`, 'USDT', '100'],
      ['equity:trading:USDT', 'USDT', '-100'],
      ['equity:trading:USD', 'USD', '100'],
      [`liabilities:customers:${erin.id}`, 'USD', '-100'],
    ]);
    expect((await ledger.getEntry(again.entry_id))?.metadata).not.toHaveProperty(
      'receivableRepaid',
    );
    expect(await usdBalance(erin.id)).toBe('100');
    expect((await postedBalance(`assets:receivables:customers:${erin.id}`)).toString()).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test("a deposit to an erased user's address is kept as unclaimed, where erasure put the rest of their balance", async () => {
    const w = watcher();
    await w.runOnce();
    const gone = await newUser(9006);
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '5' },
        { account: `liabilities:customers:${gone.id}`, amount: '-5' },
      ],
    });
    const erasure = await eraseAccount(kyselyOver(database.pool), ledger, {
      userId: gone.id,
      confirm: ERASURE_CONFIRMATION,
      now: new Date(),
    });
    expect(erasure.unclaimedBalance.amount).toBe('5');
    const beforeTransfer = await devnet.snapshot();
    const { txHash } = await devnet.transferToken(
      usdt,
      devnet.account(0),
      gone.address,
      25_000_000n,
    );
    await devnet.mine(4);
    await w.runOnce();
    const deposit = (
      await database.pool.query(`select status, entry_id from deposits where tx_hash = $1`, [
        txHash,
      ])
    ).rows[0];
    expect(deposit.status).toBe('credited');
    expect(await entryLines(deposit.entry_id)).toEqual([
      [`assets:custody:devnet:USDT:${gone.address}`, 'USDT', '25'],
      ['equity:trading:USDT', 'USDT', '-25'],
      ['equity:trading:USD', 'USD', '25'],
      [`liabilities:unclaimed:${gone.id}`, 'USD', '-25'],
    ]);
    expect(await usdBalance(gone.id)).toBe('0');
    expect((await postedBalance(`liabilities:unclaimed:${gone.id}`)).toString()).toBe('30');
    expect(await ledger.checkBalances()).toEqual([]);

    // The operator pays most of it out (a refund to the sender, say); then a reorg removes the
    // deposit: what is left of it comes back from unclaimed, the rest is owed to us.
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: `liabilities:unclaimed:${gone.id}`, amount: '28' },
        { account: 'expenses:promotions', amount: '-28' },
      ],
    });
    await reorgTo(beforeTransfer, w);
    const reversed = (
      await database.pool.query(
        `select status, reversal_entry_id from deposits where tx_hash = $1`,
        [txHash],
      )
    ).rows[0];
    expect(reversed.status).toBe('reversed');
    expect(await entryLines(reversed.reversal_entry_id)).toEqual([
      [`assets:custody:devnet:USDT:${gone.address}`, 'USDT', '-25'],
      ['equity:trading:USDT', 'USDT', '25'],
      ['equity:trading:USD', 'USD', '-25'],
      [`liabilities:unclaimed:${gone.id}`, 'USD', '2'],
      [`assets:receivables:customers:${gone.id}`, 'USD', '23'],
    ]);
    expect((await postedBalance(`liabilities:unclaimed:${gone.id}`)).toString()).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a deposit credited while its user is being erased ends in their unclaimed balance, not in a customer account nobody can use', async () => {
    const w = watcher();
    await w.runOnce();
    const leaving = await newUser(9008);
    // A first deposit, credited as usual (its ledger accounts exist from then on).
    await devnet.transferToken(usdt, devnet.account(0), leaving.address, 2_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    expect(await usdBalance(leaving.id)).toBe('2');
    // The next one is seen in one iteration and credited in a later one (the usual case).
    await devnet.transferToken(usdt, devnet.account(0), leaving.address, 40_000_000n);
    await w.runOnce();
    await devnet.mine(3);
    // The watcher's ledger write is held back (another writer on equity:trading:USD) after it
    // has looked at the user, while the user erases their account.
    const holder = await database.pool.connect();
    let credited: Promise<unknown> | undefined;
    let erasure: Promise<unknown> | undefined;
    try {
      await holder.query('begin');
      await holder.query(
        `select 1 from ledger_accounts where code = 'equity:trading:USD' for update`,
      );
      const running = w.runOnce();
      credited = running.then(
        () => 'done',
        (error: unknown) => error,
      );
      // A statement on `table` waiting for a lock (a row lock waits on the holder's transaction).
      const blockedOn = async (table: string) =>
        (
          await database.pool.query(
            `select 1 from pg_stat_activity
              where wait_event_type = 'Lock' and query ~ ('from "?' || $1 || '"? ')`,
            [table],
          )
        ).rowCount! > 0;
      const deadline = Date.now() + 20_000;
      while (!(await blockedOn('ledger_accounts')) && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 25));
      expect(await blockedOn('ledger_accounts')).toBe(true);
      erasure = eraseAccount(kyselyOver(database.pool), ledger, {
        userId: leaving.id,
        confirm: ERASURE_CONFIRMATION,
        now: new Date(),
      }).then(
        () => 'done',
        (error: unknown) => error,
      );
      // The erasure either finishes, or waits for the watcher's hold on the user's row.
      const settled = { erasure: false };
      void erasure.then(() => (settled.erasure = true));
      while (!settled.erasure && !(await blockedOn('users')) && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 25));
    } finally {
      await holder.query('commit');
      holder.release();
    }
    expect(await credited).toBe('done');
    expect(await erasure).toBe('done');

    const { rows } = await database.pool.query(
      `select status, entry_id from deposits where address = $1`,
      [leaving.address.toLowerCase()],
    );
    expect(rows.map((r) => r.status)).toEqual(['credited', 'credited']);
    // Nothing stays in the erased user's customer account: all 42 USD are owed as unclaimed.
    expect(await usdBalance(leaving.id)).toBe('0');
    expect((await postedBalance(`liabilities:unclaimed:${leaving.id}`)).toString()).toBe('42');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a deposit beyond what the ledger holds exactly is ignored for an operator, and the watcher goes on crediting', async () => {
    const w = watcher();
    await w.runOnce();
    const whale = await newUser(9007);
    const funder = devnet.account(0);
    await devnet.mint(usdt, funder.address, 10n ** 43n);
    const vast = await devnet.transferToken(usdt, funder, whale.address, 10n ** 42n); // 10^36 USDT
    const small = await devnet.transferToken(usdt, funder, whale.address, 2_000_000n);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const { rows } = await database.pool.query(
      `select tx_hash, status, ignore_reason from deposits where user_id = $1 order by id`,
      [whale.id],
    );
    expect(rows).toEqual([
      {
        tx_hash: vast.txHash,
        status: 'ignored',
        ignore_reason: expect.stringMatching(/^more than the ledger holds/),
      },
      { tx_hash: small.txHash, status: 'credited', ignore_reason: null },
    ]);
    expect(await usdBalance(whale.id)).toBe('2');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a booked sweep that a reorg removes is reversed with its network fee, and booked again when mined in another block', async () => {
    // The operator's signer for alice's deposit address (index 0): never held by the service.
    const alicePrivateKey = toHex(
      mnemonicToAccount(MNEMONIC, { addressIndex: 0 }).getHdKey().privateKey!,
    );
    const treasury = devnet.account(5).address;
    const w = watcher(network({ treasuryAddresses: [treasury] }));
    await devnet.sendEth(devnet.account(0), alice.address, 10n ** 17n);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const fees = () => postedBalance('expenses:network-fees:devnet');
    const swept = () => postedBalance(`assets:custody:devnet:ETH:${treasury}`);
    const feesBefore = await fees();
    const beforeSweep = await devnet.snapshot();
    const raw = await signTransaction(alicePrivateKey, {
      to: treasury,
      value: 10n ** 16n,
      gas: 21_000n,
    });
    const txHash = await devnet.rpc<Hex>('eth_sendRawTransaction', [raw]);
    const feeOf = async () => {
      const receipt = await devnet.client.getTransactionReceipt({ hash: txHash });
      return new Decimal((receipt.gasUsed * receipt.effectiveGasPrice).toString()).div(
        new Decimal(10).pow(18),
      );
    };
    await devnet.mine(4);
    await w.runOnce();
    const sweep = async () =>
      (
        await database.pool.query(
          `select kind, status, reincluded, entry_id, fee_entry_id from outgoing_transfers where tx_hash = $1`,
          [txHash],
        )
      ).rows[0];
    const first = await sweep();
    expect(first).toMatchObject({ kind: 'sweep', status: 'booked', reincluded: 0 });
    expect((await fees()).sub(feesBefore)).toEqual(await feeOf());
    expect((await swept()).toString()).toBe('0.01');

    await reorgTo(beforeSweep, w);
    expect(await sweep()).toMatchObject({ status: 'orphaned' });
    // Neither the sweep nor its fee happened on this chain.
    expect((await fees()).sub(feesBefore).toString()).toBe('0');
    expect((await swept()).toString()).toBe('0');

    // Mined again in another block: booked again, and every later iteration still succeeds.
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    const second = await sweep();
    expect(second).toMatchObject({ status: 'booked', reincluded: 1 });
    expect(second.entry_id).not.toBe(first.entry_id);
    expect(second.fee_entry_id).not.toBe(first.fee_entry_id);
    expect((await fees()).sub(feesBefore)).toEqual(await feeOf());
    expect((await swept()).toString()).toBe('0.01');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('ETH from a treasury address to a deposit address (gas for a sweep) is never credited: it is booked custody to custody with its fee; a customer ETH deposit beside it is credited', async () => {
    const treasury = devnet.account(6);
    const w = watcher(network({ treasuryAddresses: [treasury.address] }));
    await w.runOnce();
    const dave = await newUser(9008);
    const feesBefore = await postedBalance('expenses:network-fees:devnet');
    const topUp = await devnet.sendEth(treasury, dave.address, 10n ** 16n); // 0.01 ETH of gas
    const paid = await devnet.sendEth(devnet.account(0), dave.address, 2n * 10n ** 15n); // 0.002 ETH
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();

    // Only the customer's own 0.002 ETH is a deposit: 0.002 x 3123.45678901 = 6.24691357802 USD.
    const { rows: deposits } = await database.pool.query(
      `select tx_hash, status from deposits where user_id = $1 order by id`,
      [dave.id],
    );
    expect(deposits).toEqual([{ tx_hash: paid.txHash, status: 'credited' }]);
    expect(await usdBalance(dave.id)).toBe('6.24691357802');

    const { rows } = await database.pool.query(
      `select kind, status, from_address, to_address, amount::text, log_index, reincluded, entry_id, fee_entry_id
         from outgoing_transfers where tx_hash = $1`,
      [topUp.txHash],
    );
    expect(rows).toEqual([
      expect.objectContaining({
        kind: 'topup',
        status: 'booked',
        from_address: treasury.address,
        to_address: dave.address,
        amount: '0.01',
        log_index: -1,
        reincluded: 0,
      }),
    ]);
    const entry = await ledger.getEntry(rows[0].entry_id);
    expect(entry?.kind).toBe('topup');
    expect(entry?.metadata).toMatchObject({
      chain: {
        network: 'devnet',
        txHash: topUp.txHash,
        logIndex: -1,
        blockNumber: topUp.blockNumber.toString(),
      },
    });
    expect(await entryLines(rows[0].entry_id)).toEqual([
      [`assets:custody:devnet:ETH:${dave.address}`, 'ETH', '0.01'],
      [`assets:custody:devnet:ETH:${treasury.address}`, 'ETH', '-0.01'],
    ]);
    // The treasury signed and paid for the transaction: its fee, against its custody.
    const fee = new Decimal(topUp.feeWei.toString()).div(new Decimal(10).pow(18));
    expect(fee.gt(0)).toBe(true);
    expect(await entryLines(rows[0].fee_entry_id)).toEqual([
      ['expenses:network-fees:devnet', 'ETH', fee.toString()],
      [`assets:custody:devnet:ETH:${treasury.address}`, 'ETH', fee.neg().toString()],
    ]);
    expect((await postedBalance('expenses:network-fees:devnet')).sub(feesBefore)).toEqual(fee);
    expect((await postedBalance(`assets:custody:devnet:ETH:${dave.address}`)).toString()).toBe(
      '0.012',
    );
    expect(
      (await ledger.entryIdsByKey([`topup:devnet:${topUp.txHash}:-1`])).get(
        `topup:devnet:${topUp.txHash}:-1`,
      ),
    ).toBe(rows[0].entry_id);
    // Another iteration books nothing twice.
    await devnet.mine(1);
    expect((await w.runOnce()).booked).toBe(0);
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a top-up a reorg removes is orphaned before booking, reversed with its fee after, and booked again when mined again', async () => {
    const treasury = devnet.account(6);
    const w = watcher(network({ treasuryAddresses: [treasury.address] }));
    await w.runOnce();
    const erin = await newUser(9009);
    const custody = () => postedBalance(`assets:custody:devnet:ETH:${erin.address}`);
    const treasuryCustody = () => postedBalance(`assets:custody:devnet:ETH:${treasury.address}`);
    const fees = () => postedBalance('expenses:network-fees:devnet');
    const treasuryBefore = await treasuryCustody();
    const feesBefore = await fees();
    const raw = await signTransaction(treasury.privateKey, {
      to: erin.address,
      value: 10n ** 16n,
      gas: 21_000n,
    });
    const txHash = keccak256(raw);
    const topUp = async () =>
      (
        await database.pool.query(
          `select kind, status, reincluded, entry_id, fee_entry_id from outgoing_transfers where tx_hash = $1`,
          [txHash],
        )
      ).rows[0];
    const feeOf = async () => {
      const receipt = await devnet.client.getTransactionReceipt({ hash: txHash });
      return new Decimal((receipt.gasUsed * receipt.effectiveGasPrice).toString()).div(
        new Decimal(10).pow(18),
      );
    };

    // Removed before it has its confirmations: orphaned, nothing booked.
    let snapshot = await devnet.snapshot();
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await w.runOnce();
    expect(await topUp()).toMatchObject({ kind: 'topup', status: 'seen', entry_id: null });
    await reorgTo(snapshot, w);
    expect(await topUp()).toMatchObject({ status: 'orphaned', entry_id: null, fee_entry_id: null });
    expect((await custody()).toString()).toBe('0');

    // Mined again: booked under a new key.
    snapshot = await devnet.snapshot();
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const first = await topUp();
    expect(first).toMatchObject({ status: 'booked', reincluded: 1 });
    expect(
      (await ledger.entryIdsByKey([`topup:devnet:${txHash}:-1:reincluded-1`])).get(
        `topup:devnet:${txHash}:-1:reincluded-1`,
      ),
    ).toBe(first.entry_id);
    expect((await custody()).toString()).toBe('0.01');
    expect((await treasuryCustody()).sub(treasuryBefore)).toEqual(
      new Decimal('-0.01').sub(await feeOf()),
    );

    // Removed after booking: the top-up and its fee are reversed, keyed by the entries.
    await reorgTo(snapshot, w);
    expect(await topUp()).toMatchObject({ status: 'orphaned' });
    const reversal = await ledger.getReversalOf(first.entry_id);
    expect(reversal?.kind).toBe('topup.reversal');
    expect(
      (await ledger.entryIdsByKey([`topup-reversal:${first.entry_id}`])).get(
        `topup-reversal:${first.entry_id}`,
      ),
    ).toBe(reversal?.id);
    expect(await ledger.getReversalOf(first.fee_entry_id)).not.toBeNull();
    expect((await custody()).toString()).toBe('0');
    expect((await treasuryCustody()).sub(treasuryBefore).toString()).toBe('0');
    expect((await fees()).sub(feesBefore).toString()).toBe('0');

    // Mined again in another block: booked again, under new keys.
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    const second = await topUp();
    expect(second).toMatchObject({ status: 'booked', reincluded: 2 });
    expect(second.entry_id).not.toBe(first.entry_id);
    expect(second.fee_entry_id).not.toBe(first.fee_entry_id);
    expect((await custody()).toString()).toBe('0.01');
    expect((await fees()).sub(feesBefore)).toEqual(await feeOf());
    expect(await usdBalance(erin.id)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });

  test('a transfer from a treasury recorded as a deposit before the treasury was known is not credited once it is: ignored with a reason', async () => {
    const treasury = devnet.account(7);
    const before = watcher(); // no treasury configured yet: it is recorded as a deposit
    await before.runOnce();
    const fay = await newUser(9010);
    const sent = await devnet.sendEth(treasury, fay.address, 10n ** 16n);
    await before.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === sent.txHash)?.status).toBe('seen');
    const w = watcher(network({ treasuryAddresses: [treasury.address] }));
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    expect((await depositRows()).find((d) => d.tx_hash === sent.txHash)).toMatchObject({
      status: 'ignored',
      ignore_reason: expect.stringMatching(/^sent by a treasury address/),
    });
    expect(await usdBalance(fay.id)).toBe('0');
  });

  test('an RPC endpoint that fails is passed over: deposits are still credited', async () => {
    const failing = await startFailingRpcServer(500);
    try {
      const w = watcher(network({ rpcUrls: [failing.url, devnet.url] }));
      await w.runOnce();
      const sent = await devnet.transferToken(usdt, devnet.account(0), alice.address, 3_000_000n);
      await devnet.mine(4);
      await w.runOnce();
      expect((await depositRows()).find((d) => d.tx_hash === sent.txHash)?.status).toBe('credited');
    } finally {
      await failing.close();
    }
  });

  test('a range a fallback endpoint serves from another fork than the cursor is refused: a deposit only the losing fork had is orphaned, never credited', async () => {
    // Two nodes that agree up to this block, then each follow their own fork (a primary and
    // its fallback, or two nodes behind one load balancer). The primary's fork has Dave's
    // deposit; the fallback's fork, which wins, does not.
    const forkedAt = await devnet.blockNumber();
    const other = await startDevnet({ forkUrl: devnet.url });
    await devnet.mine(1); // the other has mined a block of its own at this height
    let primaryFails: 'nothing' | 'scans' | 'everything' = 'nothing';
    const primary = await startRpcProxy(devnet.url, (call) =>
      primaryFails === 'everything' || (primaryFails === 'scans' && call.method === 'eth_getLogs')
        ? { error: { code: -32603, message: 'internal error' } }
        : undefined,
    );
    try {
      const dave = await newUser(9011);
      const config = network({
        name: 'devnet-forks',
        rpcUrls: [primary.url, other.url],
        startBlock: Number(forkedAt) + 1,
        // Native transfers too: the scan reads every block of the range.
        assets: [
          { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
          { symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } },
        ],
      });
      const w = watcher(config);
      await w.runOnce(); // the cursor: the primary's block after the last one both have
      const sent = await devnet.transferToken(usdt, devnet.account(0), dave.address, 5_000_000n);
      await other.mine(1);
      const hashes = async (blockNumber: bigint) =>
        Promise.all(
          [devnet, other].map(async (node) => (await node.client.getBlock({ blockNumber })).hash),
        );
      const [shared, diverged] = [await hashes(forkedAt), await hashes(forkedAt + 1n)];
      expect(shared[0]).toBe(shared[1]);
      expect(diverged[0]).not.toBe(diverged[1]);
      await w.runOnce(); // the primary: the deposit is seen, the cursor is the primary's block
      const status = async () =>
        (
          await database.pool.query<{ status: string }>(
            `select status from deposits where network = 'devnet-forks' and tx_hash = $1`,
            [sent.txHash],
          )
        ).rows[0]?.status;
      expect(await status()).toBe('seen');

      await devnet.mine(2);
      await other.mine(3);
      // The primary still agrees with the cursor but cannot serve the range after it: the
      // fallback, on the other fork, is asked for it.
      primaryFails = 'scans';
      await w.runOnce().catch(() => {});
      expect(await status()).not.toBe('credited');
      // The primary goes away; the fallback's fork is the chain from now on.
      primaryFails = 'everything';
      await other.mine(3);
      await w.runOnce();
      await w.runOnce();
      expect(await status()).toBe('orphaned');
      expect(await usdBalance(dave.id)).toBe('0');
      expect(
        (await postedBalance(`assets:custody:devnet-forks:USDT:${dave.address}`)).toString(),
      ).toBe('0');
      expect(await ledger.checkBalances()).toEqual([]);
    } finally {
      await primary.close();
      await other.close();
    }
  });
  test('a credited deposit whose transaction a deep reorg mines again with another outcome (it reverts) is reversed, never credited again', async () => {
    const w = watcher();
    await w.runOnce();
    const frank = await newUser(9012);
    const custody = `assets:custody:devnet:ETH:${frank.address}`;
    const beforeTransfer = await devnet.snapshot();
    const raw = await signTransaction(devnet.account(4).privateKey, {
      to: frank.address,
      value: 10n ** 16n, // 0.01 ETH
      gas: 100_000n,
    });
    const txHash = keccak256(raw);
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const deposit = async () =>
      (
        await database.pool.query(
          `select status, reincluded, ignore_reason, entry_id from deposits where tx_hash = $1`,
          [txHash],
        )
      ).rows[0];
    const first = await deposit();
    expect(first).toMatchObject({ status: 'credited', reincluded: 0 });
    expect(await usdBalance(frank.id)).toBe('31.2345678901');

    // A deeper reorg than the confirmations. On the new branch the address refuses ether (its
    // code: PUSH1 0 PUSH1 0 REVERT; on a real chain, an EIP-7702 delegation would do) and the
    // very same transaction is mined again there: it reverts, the 0.01 ETH never arrives. The
    // rescan sees it under the same identity (transaction, log index -1), failed.
    await devnet.revert(beforeTransfer);
    await devnet.rpc('evm_setAccountCode', [frank.address, '0x60006000fd']);
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    const receipt = await devnet.client.getTransactionReceipt({ hash: txHash });
    expect(receipt.status).toBe('reverted');
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();

    const reversal = await ledger.getReversalOf(first.entry_id);
    expect(reversal?.reversesEntryId).toBe(first.entry_id);
    expect(await deposit()).toMatchObject({
      status: 'ignored',
      ignore_reason: 'the transaction failed',
      reincluded: 1,
      entry_id: null,
    });
    expect(await usdBalance(frank.id)).toBe('0');
    expect((await postedBalance(custody)).toString()).toBe('0');
    await devnet.mine(3);
    await w.runOnce();
    await watcher().runOnce();
    expect((await deposit()).status).toBe('ignored');
    expect(await usdBalance(frank.id)).toBe('0');
    expect(await ledger.checkBalances()).toEqual([]);
  });
  test('a credited deposit whose transaction a deep reorg mines again with the same outcome stays credited, once', async () => {
    const w = watcher();
    await w.runOnce();
    const grace = await newUser(9013);
    const beforeTransfer = await devnet.snapshot();
    const raw = await signTransaction(devnet.account(4).privateKey, {
      to: grace.address,
      value: 10n ** 16n,
      gas: 21_000n,
    });
    const txHash = keccak256(raw);
    await devnet.rpc<Hex>('eth_sendRawTransaction', [raw]);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const deposit = async () =>
      (
        await database.pool.query(
          `select status, reincluded, entry_id, reversal_entry_id from deposits where tx_hash = $1`,
          [txHash],
        )
      ).rows[0];
    const first = await deposit();
    expect(first).toMatchObject({ status: 'credited', reincluded: 0 });
    // The new branch has the same transaction, with the same outcome, in another block.
    await devnet.revert(beforeTransfer);
    await devnet.mine(1, { increaseTimeS: 3 });
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await deposit()).toEqual({ ...first, status: 'credited', reversal_entry_id: null });
    expect(await ledger.getReversalOf(first.entry_id)).toBeNull();
    expect(await usdBalance(grace.id)).toBe('31.2345678901');
    expect(await ledger.checkBalances()).toEqual([]);
  });
  test("a credited deposit that a reorg removes and the new branch pays to another user's address stays reversed in the first user's history; the other user's is a deposit of its own", async () => {
    const w = watcher();
    await w.runOnce();
    const ivan = await newUser(830_001);
    const judy = await newUser(830_002);
    // A contract call whose recipient depends on the chain's state (a router, a payment
    // splitter): this router pays 50 USDT to whoever its code names. The very same transaction
    // is mined on both branches; on the new one the router names another address.
    const router = '0x00000000000000000000000000000000000c0de1' as Address;
    await devnet.mint(usdt, router, 50_000_000n);
    // PUSH4 transfer-selector, SHL 224, MSTORE 0; PUSH20 to, MSTORE 4; PUSH32 amount, MSTORE 36;
    // CALL(gas, usdt, 0, 0, 68, 0, 0); POP; STOP.
    const routerCode = (to: Address): Hex =>
      (`0x63a9059cbb60e01b600052` +
        `73${to.slice(2).toLowerCase()}600452` +
        `7f${50_000_000n.toString(16).padStart(64, '0')}602452` +
        `6000600060446000600073${usdt.slice(2).toLowerCase()}5af15000`) as Hex;
    await devnet.rpc('evm_setAccountCode', [router, routerCode(ivan.address)]);
    await devnet.mine(4);
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    const raw = await signTransaction(devnet.account(4).privateKey, { to: router, gas: 200_000n });
    const txHash = keccak256(raw);
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(4);
    for (let i = 0; i < 2; i += 1) await w.runOnce();
    const rows = async () =>
      (
        await database.pool.query(
          `select user_id, address, status, entry_id, reversal_entry_id, amount::text
             from deposits where tx_hash = $1 order by id`,
          [txHash],
        )
      ).rows;
    const [first] = await rows();
    expect(first).toMatchObject({ user_id: ivan.id, status: 'credited', amount: '50' });
    expect(await usdBalance(ivan.id)).toBe('50');

    // A deep reorg; on the new branch the router pays Judy, in the very same transaction.
    await devnet.revert(beforeTransfer);
    await devnet.rpc('evm_setAccountCode', [router, routerCode(judy.address)]);
    await devnet.mine(1, { increaseTimeS: 3 });
    expect(await devnet.rpc<Hex>('eth_sendRawTransaction', [raw])).toBe(txHash);
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();

    const reversal = await ledger.getReversalOf(first.entry_id);
    expect(reversal?.reversesEntryId).toBe(first.entry_id);
    // Ivan's balance went back to 0: his history still says why (the deposit, reversed).
    expect(await usdBalance(ivan.id)).toBe('0');
    expect(await usdBalance(judy.id)).toBe('50');
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
    expect(
      (await database.pool.query(`select status from deposits where user_id = $1`, [ivan.id])).rows,
    ).toEqual([{ status: 'reversed' }]);
    expect(await ledger.checkBalances()).toEqual([]);
  });
});

describe('EVM deposits priced by a Chainlink feed on another network', () => {
  let l2: Devnet;
  beforeAll(async () => {
    l2 = await startDevnet({ accounts: 2 });
  });
  afterAll(async () => {
    await l2?.close();
  });

  test("ETH on an L2 ahead of the feed network is credited at the feed's latest round", async () => {
    // Block numbers of two chains are unrelated: this one is far ahead of the feed's.
    await l2.mine(1000);
    const l2Network = networkSchema.parse({
      kind: 'evm',
      name: 'l2',
      chainId: 1337,
      rpcUrls: [l2.url],
      confirmations: 2,
      pollIntervalMs: 100,
      rpcTimeoutMs: 2000,
      rpcRetries: 1,
      startBlock: Number(await l2.blockNumber()) + 1,
      assets: [
        {
          symbol: 'ETH',
          native: true,
          decimals: 18,
          price: { chainlink: { network: 'devnet', feed, maxAgeS: 100_000 } },
        },
      ],
    }) as EvmNetworkConfig;
    const adapters = new Map([
      ['devnet', createEvmAdapter(network(), { logger: quiet })],
      ['l2', createEvmAdapter(l2Network, { logger: quiet })],
    ]);
    const w = new DepositWatcher({
      network: l2Network,
      adapter: adapters.get('l2')!,
      ledger,
      pool: database.pool,
      priceSources: createPriceSources(l2Network, adapters),
      logger: quiet,
    });
    const carol = await newUser(9003);
    await w.runOnce();
    const sent = await l2.sendEth(l2.account(0), carol.address, 2n * 10n ** 16n); // 0.02 ETH
    await l2.mine(2);
    for (let i = 0; i < 2; i += 1) await w.runOnce();

    const deposit = (
      await database.pool.query(
        `select status, rate::text, amount_usd::text, rate_details from deposits where network = 'l2' and tx_hash = $1`,
        [sent.txHash],
      )
    ).rows[0];
    // 0.02 x 3123.45678901 (the feed's round on devnet) = 62.4691357802.
    expect(deposit).toMatchObject({
      status: 'credited',
      rate: '3123.45678901',
      amount_usd: '62.4691357802',
    });
    // Read on the feed's network, at a block of that network.
    expect(deposit.rate_details).toMatchObject({ network: 'devnet', feed });
    expect(BigInt(deposit.rate_details.blockNumber)).toBeLessThanOrEqual(
      await devnet.blockNumber(),
    );
    expect(await usdBalance(carol.id)).toBe('62.4691357802');
  });
});
