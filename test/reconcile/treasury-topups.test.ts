import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { Decimal } from '../../ledger/index.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { type Runtime } from '../../src/runtime.js';
import type { TestDatabase } from '../support/db.js';
import {
  operatorSigner,
  startEvmStack,
  type EvmStack,
  eth,
  postedOrZero,
} from '../support/evm/stack.js';
import { startDevnet, type Devnet, type DevnetAccount } from '../support/evm/devnet.js';

/**
 * EVM: the operator funds a deposit address's gas from the treasury (a top-up). While it is
 * confirmed but not booked yet (reconciliation ran between two watcher polls), and after it is
 * booked, neither the deposit address nor the treasury shows a finding. The treasury starts
 * empty and gets its ETH from a booked sweep, so its custody account matches the chain.
 */

/** A key of its own, never funded by the devnet: the treasury holds only what we book. */
const TREASURY_KEY = `0x${'00'.repeat(31)}02` as Hex;
const treasury: DevnetAccount = {
  address: privateKeyToAccount(TREASURY_KEY).address.toLowerCase() as Address,
  privateKey: TREASURY_KEY,
  signer: privateKeyToAccount(TREASURY_KEY),
};
let devnet: Devnet;
let stack: EvmStack;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let alice: DevnetAccount;
let bob: { id: string; address: Address };

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });
const posted = (account: string) => postedOrZero(runtime, account);
const custody = (address: string) => posted(`assets:custody:devnet:ETH:${address}`);
const chain = async (address: Address) => eth(await devnet.client.getBalance({ address }));

beforeAll(async () => {
  devnet = await startDevnet();
  stack = await startEvmStack(devnet, {
    assets: [{ symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } }],
    treasuryAddresses: [treasury.address],
  });
  ({ database, runtime, adapters, watcher } = stack);
  const first = await stack.depositAddressOf(7101);
  // The operator's signer for the first deposit address (index 0): never held by the service.
  alice = { address: first.address, ...operatorSigner(0) };
  expect(alice.signer.address.toLowerCase()).toBe(alice.address.toLowerCase());
  bob = await stack.depositAddressOf(7102);
  await watcher.runOnce();
  // Alice deposits 1 ETH (credited); the operator sweeps 0.5 of it to the empty treasury.
  await devnet.sendEth(devnet.account(0), alice.address, 10n ** 18n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
  await devnet.sendEth(alice, treasury.address, 5n * 10n ** 17n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
});
afterAll(async () => {
  await stack?.close();
});

test('the books start clean: the treasury holds the 0.5 ETH swept into it', async () => {
  expect((await custody(treasury.address)).toString()).toBe('0.5');
  expect(await chain(treasury.address)).toEqual(new Decimal('0.5'));
  expect((await reconcile()).findings).toEqual([]);
});

test('a top-up from the treasury, confirmed but not booked, is no finding; once booked, custody matches the chain', async () => {
  const topUp = await devnet.sendEth(treasury, bob.address, 10n ** 16n); // 0.01 ETH of gas
  await watcher.runOnce(); // records it: not confirmed yet, so not booked
  await devnet.mine(3); // now confirmed, but the watcher has not polled again
  const row = async () =>
    (
      await database.pool.query(`select kind, status from outgoing_transfers where tx_hash = $1`, [
        topUp.txHash,
      ])
    ).rows;
  expect(await row()).toEqual([{ kind: 'topup', status: 'seen' }]);
  // The chain has moved it (and the treasury paid the fee); the custody accounts do not know yet.
  expect(await chain(bob.address)).toEqual(new Decimal('0.01'));
  expect((await custody(bob.address)).toString()).toBe('0');
  expect((await custody(treasury.address)).sub(await chain(treasury.address))).toEqual(
    new Decimal('0.01').add(eth(topUp.feeWei)),
  );

  const run = await reconcile();
  expect(run.findings).toEqual([]);
  expect(run.blocks['devnet']).toBe(topUp.blockNumber.toString());

  // Booked on the next poll: custody to custody, the fee against the treasury; still clean.
  await watcher.runOnce();
  expect(await row()).toEqual([{ kind: 'topup', status: 'booked' }]);
  expect(await custody(bob.address)).toEqual(await chain(bob.address));
  expect(await custody(treasury.address)).toEqual(await chain(treasury.address));
  expect((await custody(treasury.address)).toString()).toBe(
    new Decimal('0.49').sub(eth(topUp.feeWei)).toString(),
  );
  // Never credited to bob: his balance is what he paid, nothing.
  expect((await posted(`liabilities:customers:${bob.id}`)).toString()).toBe('0');
  expect((await reconcile()).findings).toEqual([]);
});
