import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { encodeFunctionData, erc20Abi, keccak256, toHex, type Address, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { Decimal, type PostgresLedger } from '../../ledger/index.js';
import { networkSchema, type EvmNetworkConfig } from '../../chain-watchers/config.js';
import { createEvmAdapter } from '../../chain-watchers/evm/createEvmAdapter.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { assignDepositAddress } from '../../chain-watchers/pipeline/depositAddresses.js';
import { createPriceSources } from '../../chain-watchers/pipeline/createWatcher.js';
import { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { runWatcher } from '../../chain-watchers/pipeline/runWatcher.js';
import type { WatcherTables } from '../../chain-watchers/pipeline/tables.js';
import { startDevnet, type Devnet, type DevnetAccount } from '../support/evm/devnet.js';
import { startLoadBalancer, startRpcProxy } from '../support/evm/rpcServers.js';
import { startFlakyRpcProxy } from '../support/evm/flakyRpcProxy.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { getContract } from '../support/evm/compile.js';
import { ledgerKilledAfterCredits } from '../support/watcherFaults.js';

/**
 * Adversarial cases for the EVM deposit watcher, each against ganache and PostgreSQL: reorgs
 * that move a transaction to another position, several transfers in one transaction, a
 * connection killed before the commit, endpoints that answer from behind or from another block.
 */

const MNEMONIC = 'test test test test test test test test test test test junk';
const xpubs = mnemonicToAccountXpubs(MNEMONIC);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

let devnet: Devnet;
let database: TestDatabase;
let ledger: PostgresLedger;
let db: Kysely<WatcherTables>;
let usdt: Address;
let fakeUsdt: Address;
let nextTelegramId = 7100;

async function newUser() {
  const { rows } = await database.pool.query<{ id: string }>(
    'insert into users (telegram_id) values ($1) returning id',
    [(nextTelegramId += 1)],
  );
  const id = rows[0]!.id;
  const { address } = await assignDepositAddress(db, { userId: id, family: 'evm', xpubs });
  return {
    id,
    address: address as Address,
    customer: `liabilities:customers:${id}`,
    receivable: `assets:receivables:customers:${id}`,
  };
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
    assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
    ...overrides,
  }) as EvmNetworkConfig;
}

function watcher(config = network(), pool: pg.Pool = database.pool) {
  const adapter = createEvmAdapter(config, { logger: quiet });
  return new DepositWatcher({
    network: config,
    adapter,
    ledger,
    pool,
    priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
    logger: quiet,
  });
}

async function balance(account: string): Promise<string> {
  const found = await ledger.getBalance(account).catch(() => null);
  return (found?.posted ?? new Decimal(0)).toString();
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

async function rowsOf(txHash: string) {
  const { rows } = await database.pool.query<{
    log_index: number;
    status: string;
    reincluded: number;
    entry_id: string | null;
    reversal_entry_id: string | null;
  }>(
    `select log_index, status, reincluded, entry_id, reversal_entry_id from deposits
      where tx_hash = $1 order by log_index`,
    [txHash],
  );
  return rows;
}

/** A USDT `transfer` signed once (nonce `nonceOffset` past the pending one), to send again after a reorg. */
async function signTransfer(
  from: DevnetAccount,
  to: Address,
  amountBaseUnits: bigint,
  nonceOffset = 0,
): Promise<{ raw: Hex; txHash: Hex }> {
  const signer = privateKeyToAccount(from.privateKey);
  const nonce = await devnet.client.getTransactionCount({
    address: signer.address,
    blockTag: 'pending',
  });
  const raw = await signer.signTransaction({
    type: 'eip1559',
    chainId: 1337,
    nonce: nonce + nonceOffset,
    maxFeePerGas: 50_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n,
    gas: 500_000n,
    to: usdt,
    data: encodeFunctionData({
      abi: erc20Abi,
      functionName: 'transfer',
      args: [to, amountBaseUnits],
    }),
  });
  return { raw, txHash: keccak256(raw) };
}

/** Mines the raw transactions, in this order, into one block (ganache's miner paused meanwhile). */
async function mineTogether(raws: Hex[]): Promise<void> {
  await devnet.rpc('miner_stop');
  try {
    for (const raw of raws) await devnet.rpc('eth_sendRawTransaction', [raw]);
    await devnet.rpc('evm_mine');
  } finally {
    await devnet.rpc('miner_start');
  }
}

/** Idle until nothing is left of the ledger's invariants to complain about. */
async function expectBalancedLedger() {
  expect(await ledger.checkBalances()).toEqual([]);
  const totals = (await ledger.trialBalance()).totals;
  expect(totals.map((t) => [t.currency, t.net.toString()])).toEqual(
    totals.map((t) => [t.currency, '0']),
  );
}

beforeAll(async () => {
  devnet = await startDevnet();
  database = await createTestDatabase();
  ledger = await openLedger(database.pool, {});
  await ledger.init();
  db = new Kysely<WatcherTables>({ dialect: new PostgresDialect({ pool: database.newPool(2) }) });
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  fakeUsdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 1_000_000_000_000n);
  await devnet.mint(fakeUsdt, devnet.account(0).address, 1_000_000_000_000n);
});
afterAll(async () => {
  await db?.destroy();
  await ledger?.close();
  await database?.drop();
  await devnet?.close();
});

describe('EVM watcher, adversarial', () => {
  test('a credited, spent, reversed deposit mined again at another log index repays the receivable its reversal booked', async () => {
    const w = watcher();
    const dave = await newUser();
    const sender = devnet.account(3);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    const deposit = await signTransfer(sender, dave.address, 100_000_000n);
    // Alone in its block: log index 0.
    await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'credited' }]);
    expect(await balance(dave.customer)).toBe('100');
    await spend(dave.id, '70');

    // A reorg drops it: reversed, the 70 dave spent booked to his receivable.
    await devnet.revert(beforeTransfer);
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'reversed' }]);
    expect(await balance(dave.customer)).toBe('0');
    expect(await balance(dave.receivable)).toBe('70');

    // Mined again behind another USDT transfer of the same block: now log index 1.
    const other = await signTransfer(devnet.account(0), devnet.account(7).address, 1_000_000n);
    await mineTogether([other.raw, deposit.raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    const rows = await rowsOf(deposit.txHash);
    expect(rows).toMatchObject([
      { log_index: 0, status: 'reversed' },
      { log_index: 1, status: 'credited' },
    ]);
    // The same 100 USDT came back: the 70 owed is repaid first, dave gets the other 30.
    expect(await balance(dave.receivable)).toBe('0');
    expect(await balance(dave.customer)).toBe('30');
    expect(await balance(`assets:custody:devnet:USDT:${dave.address}`)).toBe('100');
    // Nothing more on another pass.
    await devnet.mine(2);
    await w.runOnce();
    expect(await balance(dave.customer)).toBe('30');
    await expectBalancedLedger();
  });

  test('a reorg the watcher first sees with the transfer already mined again, confirmed, at another log index: reversed and credited again in one iteration, the receivable repaid', async () => {
    const w = watcher();
    const erin = await newUser();
    const sender = devnet.account(4);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 50_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    const deposit = await signTransfer(sender, erin.address, 50_000_000n);
    await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    expect(await balance(erin.customer)).toBe('50');
    await spend(erin.id, '45');

    // The new branch, with the transfer behind another one, is already deep when it is seen.
    await devnet.revert(beforeTransfer);
    await devnet.mine(1, { increaseTimeS: 7 });
    const other = await signTransfer(devnet.account(0), devnet.account(7).address, 2_000_000n);
    await mineTogether([other.raw, deposit.raw]);
    await devnet.mine(12);
    const report = await w.runOnce();
    expect(report).toMatchObject({ reversed: 1, credited: 1 });
    expect(await rowsOf(deposit.txHash)).toMatchObject([
      { log_index: 0, status: 'reversed' },
      { log_index: 1, status: 'credited' },
    ]);
    expect(await balance(erin.receivable)).toBe('0');
    expect(await balance(erin.customer)).toBe('5');
    expect(await balance(`assets:custody:devnet:USDT:${erin.address}`)).toBe('50');
    await expectBalancedLedger();
  });

  test('two transfers to one address in one transaction, reversed after being spent, mined again shifted by one log: each reversal is repaid once, an unrelated receivable stays', async () => {
    const w = watcher();
    const fay = await newUser();
    // 5 fay owes for something else: a call settled above a hold her balance could not cover.
    await ledger.postEntry({
      kind: 'adjustment',
      postings: [
        { account: 'expenses:promotions', amount: '1' },
        { account: fay.customer, amount: '-1' },
      ],
    });
    const { holdId } = await ledger.createHold({
      debitAccount: fay.customer,
      creditAccount: 'revenue:usage',
      amount: '1',
    });
    await ledger.postHold({
      holdId,
      amount: '6',
      allowOverHold: true,
      shortfallAccount: fay.receivable,
    });
    expect(await balance(fay.receivable)).toBe('5');
    const sender = devnet.account(5);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
    // And a token that calls itself USDT, from another contract: recorded, never credited.
    await devnet.transferToken(fakeUsdt, devnet.account(0), fay.address, 1_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    // One transaction, two Transfer logs to fay (60 then 40).
    const signer = privateKeyToAccount(sender.privateKey);
    const raw = await signer.signTransaction({
      type: 'eip1559',
      chainId: 1337,
      nonce: await devnet.client.getTransactionCount({
        address: signer.address,
        blockTag: 'pending',
      }),
      maxFeePerGas: 50_000_000_000n,
      maxPriorityFeePerGas: 1_000_000_000n,
      gas: 500_000n,
      to: usdt,
      data: encodeFunctionData({
        abi: (await getContract('TestToken')).abi,
        functionName: 'transferMany',
        args: [
          [fay.address, fay.address],
          [60_000_000n, 40_000_000n],
        ],
      }),
    });
    const txHash = keccak256(raw);
    await devnet.rpc('eth_sendRawTransaction', [raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    expect(await rowsOf(txHash)).toMatchObject([
      { log_index: 0, status: 'credited' },
      { log_index: 1, status: 'credited' },
    ]);
    expect(await balance(fay.customer)).toBe('100');
    await spend(fay.id, '70');

    await devnet.revert(beforeTransfer);
    await devnet.mine(12, { increaseTimeS: 11 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await rowsOf(txHash)).toMatchObject([
      { log_index: 0, status: 'reversed' },
      { log_index: 1, status: 'reversed' },
    ]);
    expect(await balance(fay.customer)).toBe('0');
    expect(await balance(fay.receivable)).toBe('75');

    // Mined again behind another transfer: its logs are now 1 and 2.
    const other = await signTransfer(devnet.account(0), devnet.account(7).address, 3_000_000n);
    await mineTogether([other.raw, raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    expect(await rowsOf(txHash)).toMatchObject([
      { log_index: 0, status: 'reversed' },
      { log_index: 1, status: 'credited' },
      { log_index: 2, status: 'credited' },
    ]);
    // The 70 the reversals booked is repaid, once; the 5 owed for the call is not theirs.
    expect(await balance(fay.receivable)).toBe('5');
    expect(await balance(fay.customer)).toBe('30');
    expect(await balance(`assets:custody:devnet:USDT:${fay.address}`)).toBe('100');
    const { rows: fake } = await database.pool.query(
      `select status from deposits where contract = $1 and address = $2`,
      [fakeUsdt, fay.address],
    );
    expect(fake).toEqual([{ status: 'ignored' }]);
    await expectBalancedLedger();
  });

  test('a deposit a reorg moves to another block and log index, and a second reorg moves back: credited once per chain it is on, each receivable repaid, custody as on the chain', async () => {
    const w = watcher();
    const jo = await newUser();
    const sender = devnet.account(8);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
    await devnet.mine(4);
    await w.runOnce();
    const base = await devnet.snapshot();
    const deposit = await signTransfer(sender, jo.address, 100_000_000n);
    // Chain 1: alone in its block, log index 0.
    await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
    await devnet.mine(4);
    await w.runOnce();
    await w.runOnce();
    expect(await rowsOf(deposit.txHash)).toMatchObject([{ log_index: 0, status: 'credited' }]);
    await spend(jo.id, '70');

    // Chain 2: one block later, behind another transfer: log index 1.
    await devnet.revert(base);
    const again = await devnet.snapshot();
    await devnet.mine(1, { increaseTimeS: 3 });
    const other = await signTransfer(devnet.account(0), devnet.account(7).address, 1_000_000n);
    await mineTogether([other.raw, deposit.raw]);
    await devnet.mine(10);
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await rowsOf(deposit.txHash)).toMatchObject([
      { log_index: 0, status: 'reversed', reincluded: 0 },
      { log_index: 1, status: 'credited', reincluded: 0 },
    ]);
    expect(await balance(jo.receivable)).toBe('0');
    expect(await balance(jo.customer)).toBe('30');
    await spend(jo.id, '30');

    // Chain 3: back where it was first, alone in its block at log index 0.
    await devnet.revert(again);
    await devnet.rpc('eth_sendRawTransaction', [deposit.raw]);
    await devnet.mine(16, { increaseTimeS: 5 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await rowsOf(deposit.txHash)).toMatchObject([
      { log_index: 0, status: 'credited', reincluded: 1 },
      { log_index: 1, status: 'reversed', reincluded: 0 },
    ]);
    // The second reversal booked the whole 100 (all spent); the third credit repays all of it.
    expect(await balance(jo.receivable)).toBe('0');
    expect(await balance(jo.customer)).toBe('0');
    expect(await balance(`assets:custody:devnet:USDT:${jo.address}`)).toBe('100');
    // A fresh watcher, further blocks: nothing credited twice.
    await devnet.mine(2);
    await watcher().runOnce();
    await w.runOnce();
    const { rows: entries } = await database.pool.query(
      `select kind, count(*)::int as n from ledger_entries
        where metadata -> 'chain' ->> 'txHash' = $1 group by kind order by kind`,
      [deposit.txHash],
    );
    expect(entries).toEqual([
      { kind: 'deposit', n: 3 },
      { kind: 'deposit.reversal', n: 2 },
    ]);
    expect(await balance(jo.customer)).toBe('0');
    await expectBalancedLedger();
  });

  test('a reorg deeper than reorgDepthMax, within the checkpoints the watcher keeps, reverses a credited deposit it removed', async () => {
    // One block per iteration: a checkpoint per block, kept for 4 x reorgDepthMax blocks.
    const config = network({ name: 'devnet-deep', reorgDepthMax: 4, startBlock: undefined });
    const w = watcher(config);
    const hal = await newUser();
    await w.runOnce();
    const beforeTransfer = await devnet.snapshot();
    await devnet.transferToken(usdt, devnet.account(0), hal.address, 8_000_000n);
    await w.runOnce();
    for (let i = 0; i < 9; i += 1) {
      await devnet.mine(1);
      await w.runOnce();
    }
    expect(await balance(hal.customer)).toBe('8');

    // The new branch replaces the 10 blocks since the snapshot (more than reorgDepthMax).
    await devnet.revert(beforeTransfer);
    await devnet.mine(14, { increaseTimeS: 13 });
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    const { rows } = await database.pool.query(
      `select status from deposits where network = 'devnet-deep' and address = $1`,
      [hal.address],
    );
    expect(rows).toEqual([{ status: 'reversed' }]);
    expect(await balance(hal.customer)).toBe('0');
    expect(await balance(`assets:custody:devnet-deep:USDT:${hal.address}`)).toBe('0');
    await expectBalancedLedger();
  });

  test('a reorg below every checkpoint the watcher keeps: it stops, credits and reverses nothing, keeps its cursor, says why each iteration; a checkpoint an operator adds below the fork lets it go on', async () => {
    // reorgDepthMax 3: checkpoints for the 12 blocks behind the cursor, one per iteration.
    const config = network({ name: 'devnet-diverged', reorgDepthMax: 3, startBlock: undefined });
    const w = watcher(config);
    const ida = await newUser();
    const ivo = await newUser();
    await w.runOnce();
    const forkBase = await devnet.client.getBlockNumber();
    const beforeTransfer = await devnet.snapshot();
    await devnet.transferToken(usdt, devnet.account(0), ida.address, 9_000_000n);
    await w.runOnce();
    for (let i = 0; i < 19; i += 1) {
      await devnet.mine(1);
      await w.runOnce();
    }
    expect(await balance(ida.customer)).toBe('9');
    const cursorOf = async () =>
      (
        await database.pool.query(
          `select block_number, block_hash, credited_to from watcher_cursors where network = 'devnet-diverged'`,
        )
      ).rows;
    const cursorBefore = await cursorOf();
    const depositsOf = async () =>
      (
        await database.pool.query(
          `select address, status from deposits where network = 'devnet-diverged' order by address`,
        )
      ).rows;

    // The new branch replaces every block since the snapshot, 20 of them: all 13 checkpoints
    // kept are off it. On it, ivo is paid instead.
    await devnet.revert(beforeTransfer);
    await devnet.mine(1, { increaseTimeS: 13 });
    await devnet.transferToken(usdt, devnet.account(0), ivo.address, 5_000_000n);
    await devnet.mine(23, { increaseTimeS: 13 });
    await expect(w.runOnce()).rejects.toMatchObject({
      name: 'ChainDivergedError',
      message: expect.stringContaining('no checkpoint kept matches the chain') as unknown,
    });

    // The loop logs it at error level with the cursor, the oldest checkpoint and what the
    // endpoint has there, each iteration, and reports it (the role sets the gauge from it).
    const errors: object[] = [];
    const failures: unknown[] = [];
    const controller = new AbortController();
    await runWatcher(w, {
      pool: database.pool,
      signal: controller.signal,
      logger: { ...quiet, error: (details) => errors.push(details) },
      onIteration: () => controller.abort(),
      onFailure: (error) => {
        failures.push(error);
        if (failures.length === 2) controller.abort();
      },
    });
    expect(failures.map((e) => (e as Error).name)).toEqual([
      'ChainDivergedError',
      'ChainDivergedError',
    ]);
    const oldest = (
      await database.pool.query(
        `select block_number, block_hash from watcher_checkpoints
          where network = 'devnet-diverged' order by block_number limit 1`,
      )
    ).rows[0];
    const onEndpoint = await devnet.client.getBlock({ blockNumber: BigInt(oldest.block_number) });
    expect(errors).toEqual([
      expect.objectContaining({
        network: 'devnet-diverged',
        cursor: cursorBefore[0].block_number,
        oldestCheckpoint: { number: oldest.block_number, hash: oldest.block_hash },
        endpointHash: onEndpoint.hash,
      }),
      expect.objectContaining({ cursor: cursorBefore[0].block_number }),
    ]);
    expect(onEndpoint.hash).not.toBe(oldest.block_hash);
    // Nothing credited, reversed or recorded; the cursor where it was.
    expect(await cursorOf()).toEqual(cursorBefore);
    expect(await depositsOf()).toEqual([{ address: ida.address, status: 'credited' }]);
    expect(await balance(ida.customer)).toBe('9');
    expect(await balance(ivo.customer)).toBe('0');

    // The way out (docs/operating.md): a block below the fork, its hash read from the chain.
    const base = await devnet.client.getBlock({ blockNumber: forkBase });
    await database.pool.query(
      `insert into watcher_checkpoints (network, block_number, block_hash) values ('devnet-diverged', $1, $2)`,
      [String(forkBase), base.hash],
    );
    for (let i = 0; i < 3; i += 1) await w.runOnce();
    expect(await depositsOf()).toEqual(
      [
        { address: ida.address, status: 'reversed' },
        { address: ivo.address, status: 'credited' },
      ].sort((a, b) => a.address.localeCompare(b.address)),
    );
    expect(await balance(ida.customer)).toBe('0');
    expect(await balance(ivo.customer)).toBe('5');
    await expectBalancedLedger();
  });

  test("the watcher's database connection killed after it booked a credit, before its commit: nothing kept, the next iteration on the same pool credits it once", async () => {
    // The ledger's pool, as `lingxi watch` shares it: the ledger guards its clients' errors.
    const pool = database.pool;
    const killer = database.newPool(1);
    const trap = ledgerKilledAfterCredits(ledger, killer);
    const config = network({ name: 'devnet-kill', startBlock: undefined });
    const adapter = createEvmAdapter(config, { logger: quiet });
    const w = new DepositWatcher({
      network: config,
      adapter,
      ledger: trap.ledger,
      pool,
      priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
      logger: quiet,
    });
    try {
      const ivy = await newUser();
      await w.runOnce();
      await devnet.transferToken(usdt, devnet.account(0), ivy.address, 12_000_000n);
      await devnet.mine(3);
      trap.arm();
      await expect(w.runOnce()).rejects.toThrow();
      expect(trap.killed()).toBe(1);
      expect(await balance(ivy.customer)).toBe('0');
      const { rows: none } = await database.pool.query(
        `select status from deposits where network = 'devnet-kill'`,
      );
      expect(none).toEqual([]);

      for (let i = 0; i < 3; i += 1) await w.runOnce();
      const { rows } = await database.pool.query(
        `select status, entry_id from deposits where network = 'devnet-kill'`,
      );
      expect(rows).toMatchObject([{ status: 'credited' }]);
      expect(await balance(ivy.customer)).toBe('12');
      const { rows: entries } = await database.pool.query(
        `select count(*)::int as n from ledger_entries where kind = 'deposit' and metadata->'chain'->>'network' = 'devnet-kill'`,
      );
      expect(entries).toEqual([{ n: 1 }]);
      await expectBalancedLedger();
    } finally {
      await killer.end();
    }
  });

  test('a fallback endpoint whose head is behind the cursor: no reorg, the cursor never goes back, a deposit waits and is credited once when it catches up', async () => {
    // The primary can be switched off; the fallback answers as a node `lag` blocks behind.
    let primaryDown = false;
    let lag = 0n;
    const primary = await startRpcProxy(devnet.url, () =>
      primaryDown ? { error: { code: -32603, message: 'internal error' } } : undefined,
    );
    const laggard = await startRpcProxy(devnet.url, async (call) => {
      const head = (await devnet.blockNumber()) - lag;
      if (call.method === 'eth_blockNumber') return { result: toHex(head) };
      if (call.method === 'eth_getBlockByNumber') {
        const [tag, full] = call.params as [string, boolean];
        const number = tag.startsWith('0x') ? BigInt(tag) : head;
        if (number > head) return { result: null };
        return { result: await devnet.rpc('eth_getBlockByNumber', [toHex(number), full]) };
      }
      if (call.method === 'eth_getLogs') {
        const [filter] = call.params as [{ toBlock: string }];
        if (BigInt(filter.toBlock) > head)
          return { error: { code: -32000, message: 'unknown block' } };
      }
      return undefined;
    });
    try {
      const config = network({
        name: 'devnet-lag',
        rpcUrls: [primary.url, laggard.url],
        startBlock: undefined,
      });
      const w = watcher(config);
      const jay = await newUser();
      await w.runOnce();
      const sent = await devnet.transferToken(usdt, devnet.account(0), jay.address, 7_000_000n);
      await w.runOnce();
      const cursor = async () =>
        BigInt(
          (
            await database.pool.query<{ block_number: string }>(
              `select block_number from watcher_cursors where network = 'devnet-lag'`,
            )
          ).rows[0]!.block_number,
        );
      const status = async () =>
        (
          await database.pool.query<{ status: string }>(
            `select status from deposits where tx_hash = $1`,
            [sent.txHash],
          )
        ).rows.map((r) => r.status);
      expect(await cursor()).toBe(sent.blockNumber);
      expect(await status()).toEqual(['seen']);

      // The primary goes away; the fallback is 4 blocks behind: behind the cursor and the deposit.
      primaryDown = true;
      lag = 4n;
      await devnet.mine(3);
      const reports = [];
      for (let i = 0; i < 3; i += 1) reports.push(await w.runOnce());
      for (const report of reports)
        expect(report).toMatchObject({ scanned: null, forkPoint: null, credited: 0 });
      expect(await cursor()).toBe(sent.blockNumber);
      expect(await status()).toEqual(['seen']);
      expect(await balance(jay.customer)).toBe('0');

      // It catches up: the deposit is credited, once.
      lag = 0n;
      for (let i = 0; i < 3; i += 1) await w.runOnce();
      expect(await status()).toEqual(['credited']);
      expect(await balance(jay.customer)).toBe('7');
      expect(await cursor()).toBe(await devnet.blockNumber());
      await expectBalancedLedger();
    } finally {
      await primary.close();
      await laggard.close();
    }
  });

  test('the head from an endpoint ahead on another fork, the scan failed over to one whose fork has the deposit: confirmations are counted on the chain the deposit is in, not the other fork', async () => {
    // Two nodes that agree up to `forkedAt`: the primary follows fork X and is ahead; the
    // fallback follows fork Y, the only one with the deposit, two blocks long.
    const forkedAt = await devnet.blockNumber();
    const ahead = await startDevnet({ forkUrl: devnet.url }); // mines its own forkedAt + 1
    await devnet.mine(1); // fork Y's own block at that height, free of logs
    const lee = await newUser();
    const sent = await devnet.transferToken(usdt, devnet.account(0), lee.address, 5_000_000n);
    expect(sent.blockNumber).toBe(forkedAt + 2n);
    await ahead.mine(8);
    expect(await ahead.blockNumber()).toBe(forkedAt + 9n);
    // The primary answers the head, then fails the scan's eth_getLogs once (an overloaded
    // gateway): the scan moves on to the fallback.
    const primary = await startFlakyRpcProxy(ahead.url);
    primary.failNext((call) => call.method === 'eth_getLogs', { httpStatus: 503 });
    try {
      const config = network({
        name: 'devnet-two-forks',
        rpcUrls: [primary.url, devnet.url],
        confirmations: 4,
        maxBlockRange: 2,
        startBlock: Number(forkedAt) + 1,
      });
      const w = watcher(config);
      const report = await w.runOnce();
      expect(primary.pendingFaults()).toBe(0);
      expect(report).toMatchObject({
        head: forkedAt + 9n,
        scanned: { from: forkedAt + 1n, to: forkedAt + 2n },
        recorded: 1,
        credited: 0,
      });
      const row = async () =>
        (
          await database.pool.query<{ status: string; confirmations: number }>(
            `select status, confirmations from deposits where tx_hash = $1`,
            [sent.txHash],
          )
        ).rows;
      // Fork Y is two blocks past the fork: the deposit has 1 of the 4 confirmations there.
      expect(await row()).toEqual([{ status: 'seen', confirmations: 1 }]);
      expect(await balance(lee.customer)).toBe('0');

      // Fork Y grows to 4 confirmations: credited, once.
      await devnet.mine(3);
      await w.runOnce();
      expect(await row()).toEqual([{ status: 'credited', confirmations: 4 }]);
      expect(await balance(lee.customer)).toBe('5');
      await expectBalancedLedger();
    } finally {
      await primary.close();
      await ahead.close();
    }
  });

  test('with "finalized" confirmations, the head endpoint has the deposit final but the endpoint that scanned it does not: not credited until the scanning endpoint finalizes it', async () => {
    // Ganache has every block final. The primary answers the head (and its finalized block,
    // the latest) but refuses every eth_getLogs, so each scan fails over to the fallback, whose
    // finalized block is `fallbackFinalized`.
    let fallbackFinalized = 0n;
    const primary = await startRpcProxy(devnet.url, (call) =>
      call.method === 'eth_getLogs'
        ? { error: { code: -32603, message: 'internal error' } }
        : undefined,
    );
    const fallback = await startRpcProxy(devnet.url, async (call) => {
      if (call.method !== 'eth_getBlockByNumber' || call.params[0] !== 'finalized') return;
      return {
        result: await devnet.rpc('eth_getBlockByNumber', [toHex(fallbackFinalized), false]),
      };
    });
    try {
      const config = network({
        name: 'devnet-final-scan',
        rpcUrls: [primary.url, fallback.url],
        confirmations: 'finalized',
        startBlock: Number(await devnet.blockNumber()) + 1,
      });
      // Not demoted for its refusals: the primary stays first, so it answers every head.
      const adapter = createEvmAdapter(config, {
        logger: quiet,
        rpc: { demoteMs: 0, demoteMsMax: 0 },
      });
      const w = new DepositWatcher({
        network: config,
        adapter,
        ledger,
        pool: database.pool,
        priceSources: createPriceSources(config, new Map([[config.name, adapter]])),
        logger: quiet,
      });
      const kim = await newUser();
      const sent = await devnet.transferToken(usdt, devnet.account(0), kim.address, 6_000_000n);
      fallbackFinalized = sent.blockNumber - 1n;
      await devnet.mine(2);
      const status = async () =>
        (
          await database.pool.query<{ status: string }>(
            `select status from deposits where tx_hash = $1`,
            [sent.txHash],
          )
        ).rows.map((r) => r.status);

      expect((await adapter.getHead()).finalized).toBeGreaterThanOrEqual(sent.blockNumber);
      expect(await w.runOnce()).toMatchObject({ recorded: 1, credited: 0 });
      expect(fallback.methods).toContain('eth_getLogs');
      expect(await status()).toEqual(['seen']);
      expect(await balance(kim.customer)).toBe('0');
      await devnet.mine(1);
      expect(await w.runOnce()).toMatchObject({ credited: 0 });
      expect(await status()).toEqual(['confirming']);
      expect(await balance(kim.customer)).toBe('0');

      // The scanning endpoint finalizes the deposit's block: credited, once.
      fallbackFinalized = sent.blockNumber;
      await devnet.mine(1);
      expect(await w.runOnce()).toMatchObject({ credited: 1 });
      expect(await status()).toEqual(['credited']);
      expect(await balance(kim.customer)).toBe('6');
      await devnet.mine(1);
      expect(await w.runOnce()).toMatchObject({ credited: 0 });
      expect(await balance(kim.customer)).toBe('6');
      await expectBalancedLedger();
    } finally {
      await primary.close();
      await fallback.close();
    }
  });

  test('two reorgs in a row while the watcher catches up a backlog range by range: each deposit ends credited once or reversed, none lost', async () => {
    const config = network({ name: 'devnet-backlog', maxBlockRange: 3, startBlock: undefined });
    const w = watcher(config);
    const kim = await newUser();
    const sender = devnet.account(6);
    await devnet.transferToken(usdt, devnet.account(0), sender.address, 100_000_000n);
    await devnet.mine(1);
    await w.runOnce();
    const start = await devnet.blockNumber();
    const chainOne = await devnet.snapshot();
    // Chain 1: A at start+1, B at start+5, then a backlog up to start+12.
    const a = await devnet.transferToken(usdt, sender, kim.address, 1_000_000n);
    await devnet.mine(3);
    const b = await signTransfer(sender, kim.address, 2_000_000n);
    await devnet.rpc('eth_sendRawTransaction', [b.raw]);
    await devnet.mine(7);
    expect(await devnet.blockNumber()).toBe(start + 12n);
    const first = await w.runOnce();
    const second = await w.runOnce();
    expect([first.scanned, second.scanned]).toEqual([
      { from: start + 1n, to: start + 3n },
      { from: start + 4n, to: start + 6n },
    ]);
    expect(await balance(kim.customer)).toBe('3'); // A and B, each confirmed in the backlog

    // Chain 2 replaces it from start+1: C instead of A, no B; the watcher rescans one range.
    await devnet.revert(chainOne);
    await devnet.mine(1, { increaseTimeS: 5 });
    const c = await devnet.transferToken(usdt, sender, kim.address, 4_000_000n);
    const chainTwo = await devnet.snapshot();
    await devnet.mine(13);
    const third = await w.runOnce();
    expect(third).toMatchObject({
      forkPoint: start,
      scanned: { from: start + 1n, to: start + 3n },
    });

    // Chain 3 replaces chain 2 after C, before the rescan got further; B is mined again in it.
    await devnet.revert(chainTwo);
    await devnet.mine(1, { increaseTimeS: 9 });
    await devnet.rpc('eth_sendRawTransaction', [b.raw]);
    await devnet.mine(16);
    for (let i = 0; i < 12; i += 1) if ((await w.runOnce()).caughtUp) break;
    const { rows } = await database.pool.query<{ tx_hash: string; status: string }>(
      `select tx_hash, status from deposits where network = 'devnet-backlog' order by block_number`,
    );
    const byTx = Object.fromEntries(rows.map((r) => [r.tx_hash, r.status]));
    expect(byTx).toEqual({
      [a.txHash]: 'reversed',
      [c.txHash]: 'credited',
      [b.txHash]: 'credited',
    });
    expect(await balance(kim.customer)).toBe('6'); // B and C
    expect(await balance(`assets:custody:devnet-backlog:USDT:${kim.address}`)).toBe('6');
    const { rows: credits } = await database.pool.query(
      `select metadata->'chain'->>'txHash' as tx, count(*)::int as n from ledger_entries
        where kind = 'deposit' and metadata->'chain'->>'network' = 'devnet-backlog' group by 1 order by 1`,
    );
    expect(credits).toEqual([a.txHash, b.txHash, c.txHash].sort().map((tx) => ({ tx, n: 1 })));
    await expectBalancedLedger();
  });

  test.each([
    ['logs without their block timestamp (the header is read for it)', false],
    ['logs that carry their block timestamp (newer nodes)', true],
  ])(
    'an endpoint whose eth_getLogs answers from another fork than its blocks (%s): the range is refused, the deposit only that fork has is never recorded nor credited',
    async (_, withTimestamp) => {
      // Two nodes that agree up to `forkedAt`, then each mine their own blocks: behind one
      // endpoint (a load balancer), blocks come from the winning fork, logs from the other.
      const forkedAt = await devnet.blockNumber();
      const winner = await startDevnet({ forkUrl: devnet.url });
      await devnet.mine(1); // the winner mined a block of its own at this height
      const proxy = await startRpcProxy(winner.url, async (call) => {
        if (call.method !== 'eth_getLogs') return undefined;
        const logs = await devnet.rpc<Array<Record<string, unknown>>>('eth_getLogs', call.params);
        if (!withTimestamp) return { result: logs };
        const stamped = await Promise.all(
          logs.map(async (log) => {
            const block = await devnet.rpc<{ timestamp: Hex }>('eth_getBlockByHash', [
              log['blockHash'],
              false,
            ]);
            return { ...log, blockTimestamp: block.timestamp };
          }),
        );
        return { result: stamped };
      });
      try {
        const gus = await newUser();
        const config = network({
          name: `devnet-logs-${withTimestamp ? 'stamped' : 'plain'}`,
          rpcUrls: [proxy.url],
          startBlock: Number(forkedAt) + 1,
        });
        const w = watcher(config);
        await w.runOnce(); // the cursor: the block before the first the two forks do not share
        const sent = await devnet.transferToken(usdt, devnet.account(0), gus.address, 9_000_000n);
        await winner.mine(6);
        const seen = await winner.client.getBlock({ blockNumber: sent.blockNumber });
        expect(seen.hash).not.toBe(sent.blockHash);
        const outcomes: string[] = [];
        for (let i = 0; i < 3; i += 1)
          outcomes.push(
            await w.runOnce().then(
              () => 'ok',
              (error: Error) => error.message,
            ),
          );
        const { rows } = await database.pool.query(
          `select status from deposits where network = $1`,
          [config.name],
        );
        expect(rows).toEqual([]);
        expect(await balance(gus.customer)).toBe('0');
        for (const outcome of outcomes) expect(outcome).toMatch(/logs of block \d+ came from/);
      } finally {
        await proxy.close();
        await winner.close();
      }
    },
  );

  test('behind a load balancer, a stale node on a losing fork answers the logs and the header of their block, the other node the rest: the range is refused, the deposit only the losing fork has is never recorded nor credited', async () => {
    // Two nodes that agree up to `forkedAt`, then each mine their own blocks. The balancer
    // sends each request (a whole batch) to one node: to the losing one `eth_getLogs` and any
    // request reading the deposit's block, to the winning one everything else.
    const forkedAt = await devnet.blockNumber();
    const winner = await startDevnet({ forkUrl: devnet.url });
    await devnet.mine(2); // the loser's own blocks at forkedAt + 1 and + 2, no logs
    const kay = await newUser();
    const sent = await devnet.transferToken(usdt, devnet.account(0), kay.address, 9_000_000n);
    expect(sent.blockNumber).toBe(forkedAt + 3n);
    const depositBlock = toHex(sent.blockNumber);
    const balancer = await startLoadBalancer([winner.url, devnet.url], (calls) =>
      calls.some(
        (call) =>
          call.method === 'eth_getLogs' ||
          (call.method === 'eth_getBlockByNumber' && call.params[0] === depositBlock),
      )
        ? 1
        : 0,
    );
    try {
      const config = network({
        name: 'devnet-balanced',
        rpcUrls: [balancer.url],
        startBlock: Number(forkedAt) + 1,
      });
      const w = watcher(config);
      const run = () =>
        w.runOnce().then(
          () => 'ok',
          (error: Error) => error.message,
        );
      // [forkedAt + 1, forkedAt + 1]: the loser answers its logs, and with them the range's last
      // block (read in the same batch), which is its own, not the winner's: refused already.
      const outcomes = [await run()];
      await winner.mine(8);
      const onWinner = await winner.client.getBlock({ blockNumber: sent.blockNumber });
      expect(onWinner.hash).not.toBe(sent.blockHash);
      for (let i = 0; i < 3; i += 1) outcomes.push(await run());
      const { rows } = await database.pool.query(`select status from deposits where network = $1`, [
        config.name,
      ]);
      expect(rows).toEqual([]);
      expect(await balance(kay.customer)).toBe('0');
      expect(outcomes[0]).toMatch(/changed during the scan/);
      // Then the winner is longer: the loser, asked for the logs, has no block at its head.
      for (const outcome of outcomes.slice(1)) expect(outcome).toMatch(/does not serve block/);
    } finally {
      await balancer.close();
      await winner.close();
    }
  });

  test('behind a load balancer, eth_getLogs answered by a node that lags (its head below the range, ganache clamps the range to it) while the other node gave the range: the range is refused, the cursor stays, the deposit is credited once an up-to-date node answers', async () => {
    // `devnet` is the lagging node: `leader` starts on its chain as it is now and mines on, so
    // `devnet` has the leader's blocks up to `lagHead` and none after (the same chain, shorter).
    // Like geth before the clients agreed to refuse such ranges (ethereum/go-ethereum#24078),
    // ganache answers `eth_getLogs` for a range past its head with the logs up to its head:
    // here none, for the range starts after it. The balancer sends every request holding an
    // `eth_getLogs` to the lagging node, everything else to the leader.
    await devnet.mine(1); // the block both share at the top: no logs in it
    const lagHead = await devnet.blockNumber();
    const leader = await startDevnet({ forkUrl: devnet.url }); // mines lagHead + 1 at once
    const lee = await newUser();
    const sent = await leader.transferToken(usdt, leader.account(0), lee.address, 9_000_000n);
    expect(sent.blockNumber).toBe(lagHead + 2n);
    await leader.mine(4);
    const ganacheLogs = await devnet.rpc<unknown[]>('eth_getLogs', [
      { fromBlock: toHex(lagHead + 1n), toBlock: toHex(await leader.blockNumber()) },
    ]);
    expect(ganacheLogs).toEqual([]); // not an error: the deposit's block is just not there
    let lagging = true;
    const balancer = await startLoadBalancer([leader.url, devnet.url], (calls) =>
      lagging && calls.some((call) => call.method === 'eth_getLogs') ? 1 : 0,
    );
    const cursor = async () =>
      (
        await database.pool.query<{ block_number: string }>(
          `select block_number from watcher_cursors where network = 'devnet-lagging-logs'`,
        )
      ).rows[0]?.block_number ?? null;
    try {
      const config = network({
        name: 'devnet-lagging-logs',
        rpcUrls: [balancer.url],
        startBlock: Number(lagHead) + 1,
      });
      const w = watcher(config);
      const outcomes: string[] = [];
      for (let i = 0; i < 2; i += 1)
        outcomes.push(
          await w.runOnce().then(
            () => 'ok',
            (error: Error) => error.message,
          ),
        );
      const cursorWhileLagging = await cursor();

      lagging = false; // the lagging node is taken out of the balancer (or catches up)
      await w.runOnce();
      await w.runOnce();
      expect((await rowsOf(sent.txHash)).map((row) => row.status)).toEqual(['credited']);
      expect(await balance(lee.customer)).toBe('9');
      // Refused while the lagging node answered the logs: the cursor never passed the deposit.
      for (const outcome of outcomes) expect(outcome).toMatch(/does not serve block/);
      expect(BigInt(cursorWhileLagging ?? '-1')).toBeLessThan(sent.blockNumber);
      await expectBalancedLedger();
    } finally {
      await balancer.close();
      await leader.close();
    }
  });
});
