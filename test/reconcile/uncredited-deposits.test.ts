import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { getDepositAddresses } from '../../src/deposits/deposits.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { type Runtime } from '../../src/runtime.js';
import { createUser } from '../../src/users/createUser.js';
import type { TestDatabase } from '../support/db.js';
import { startEvmStack, type EvmStack } from '../support/evm/stack.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';

/**
 * EVM: a successful transfer of an accepted asset that the watcher records as `ignored` (here:
 * below `minDeposit`) stays in our custody address and never reaches the books. Reconciliation
 * names it (`uncredited_deposits`, a warning) instead of reporting an anonymous
 * `custody_mismatch`; a real difference beside it is still one, with its exact amount; failed
 * transfers and tokens we do not accept are not counted; once an operator books the deposit
 * by hand (a custody entry whose chain metadata names it), the warning goes away.
 */

let devnet: Devnet;
let stack: EvmStack;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
let fake: Address;
let alice: Address;

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });

async function deposit(txHash: string): Promise<{ status: string; ignore_reason: string | null }> {
  const { rows } = await database.pool.query(
    `select status, ignore_reason from deposits where tx_hash = $1`,
    [txHash],
  );
  return rows[0];
}

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  fake = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  await devnet.mint(fake, devnet.account(0).address, 10n ** 13n);
  stack = await startEvmStack(devnet, {
    assets: [
      {
        symbol: 'USDT',
        contract: usdt,
        decimals: 6,
        minDeposit: '1',
        price: { fixed: '1' },
      },
    ],
  });
  ({ database, runtime, adapters, watcher } = stack);
  const { id } = await createUser(runtime.database.db, { telegramId: 7101 });
  const [view] = await getDepositAddresses(runtime.database.db, runtime.config, id);
  alice = view!.address as Address;
  await watcher.runOnce();
  await devnet.transferToken(usdt, devnet.account(0), alice, 30_000_000n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
});
afterAll(async () => {
  await stack?.close();
});

let dust: { txHash: string; blockNumber: bigint };

test('the books start clean: 30 USDT credited', async () => {
  expect((await reconcile()).findings).toEqual([]);
});

test('a deposit below minDeposit is a named warning, not a custody_mismatch', async () => {
  dust = await devnet.transferToken(usdt, devnet.account(0), alice, 400_000n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
  expect(await deposit(dust.txHash)).toEqual({
    status: 'ignored',
    ignore_reason: 'below the minimum of 1 USDT',
  });

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      severity: 'warning',
      kind: 'uncredited_deposits',
      network: 'devnet',
      asset: 'USDT',
      address: alice,
      account: `assets:custody:devnet:USDT:${alice}`,
      actual: '0.4',
      difference: '0.4',
      details: expect.objectContaining({
        count: 1,
        deposits: [
          {
            txHash: dust.txHash,
            logIndex: expect.any(Number),
            blockNumber: dust.blockNumber.toString(),
            amount: '0.4',
            reason: 'below the minimum of 1 USDT',
          },
        ],
      }),
    }),
  ]);
  expect(run.findings.filter((f) => f.severity === 'error')).toEqual([]);
});

test('a failed transfer and a token we do not accept are not counted', async () => {
  // A token whose contract is not in the config (its symbol says USDT): recorded, ignored, not ours.
  const other = await devnet.transferToken(fake, devnet.account(0), alice, 5_000_000n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
  expect(await deposit(other.txHash)).toMatchObject({ status: 'ignored' });
  // A failed transfer of an accepted asset, as the watcher records one (a Tron TRC-20 transfer
  // that failed: on EVM a reverted token transfer leaves no log to record): it moved nothing.
  await database.pool.query(
    `insert into deposits (network, tx_hash, log_index, user_id, address, from_address, contract,
       asset, currency, decimals, amount_base_units, amount, block_number, block_hash, status,
       confirmations, confirmations_required, ignore_reason)
     select network, '0xfailed', 0, user_id, address, from_address, contract, asset, currency,
       decimals, 7000000, 7, block_number, block_hash, 'ignored', confirmations,
       confirmations_required, 'the transaction failed'
       from deposits where tx_hash = $1`,
    [dust.txHash],
  );

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      kind: 'uncredited_deposits',
      asset: 'USDT',
      address: alice,
      difference: '0.4',
      details: expect.objectContaining({ count: 1 }),
    }),
  ]);
});

test('a real difference beside it is still an exact custody_mismatch', async () => {
  // A custody entry the chain does not back: 0.25 USDT booked by hand, no transaction.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: { reason: 'test: a custody entry the chain does not back' },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice}`, amount: '0.25', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-0.25' },
    ],
  });

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      severity: 'error',
      kind: 'custody_mismatch',
      asset: 'USDT',
      address: alice,
      expected: '30.65',
      actual: '30.4',
      difference: '-0.25',
      details: expect.objectContaining({ custody: '30.25', uncreditedDeposits: '0.4' }),
    }),
    expect.objectContaining({ kind: 'uncredited_deposits', difference: '0.4' }),
  ]);
});

test('booked by hand with a custody entry naming the deposit, the warning goes away', async () => {
  const { rows } = await database.pool.query(
    `select log_index, block_number::text, block_hash from deposits where tx_hash = $1`,
    [dust.txHash],
  );
  const row = rows[0];
  // The entry the chain does not back, taken back.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: { reason: 'test: the unbacked custody entry taken back' },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice}`, amount: '-0.25', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '0.25' },
    ],
  });
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: {
      reason: 'test: a deposit below minDeposit, kept',
      chain: {
        network: 'devnet',
        txHash: dust.txHash,
        logIndex: row.log_index,
        blockNumber: row.block_number,
        blockHash: row.block_hash,
      },
    },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice}`, amount: '0.4', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-0.4' },
    ],
  });
  expect((await reconcile()).findings).toEqual([]);
});
