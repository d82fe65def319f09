import { encodeFunctionData, erc20Abi, keccak256, type Address, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
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
import { startDevnet, type Devnet } from '../support/evm/devnet.js';

/**
 * EVM: a sweep out of a deposit address, booked (custody to custody, and its network fee), that
 * a reorg deeper than the confirmations removes, and whose very transaction the new branch
 * mines again. Another outcome there (it reverts, or pays another fee) reverses what was booked
 * and books what the chain has now; the same outcome leaves the booking as it was. ETH is
 * tracked, so reconciliation compares the fees too.
 */

const TREASURY = '0x7e5f4552091a69125d5dfcb7b8c2659029395bdf' as Address;
const GAS_PRICE = 2_000_000_000n; // a legacy transaction: the same fee for the same gas on any branch
let devnet: Devnet;
let stack: EvmStack;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
let alice: { address: Address; privateKey: Hex };

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });
const posted = (account: string) => postedOrZero(runtime, account);
const fees = () => posted('expenses:network-fees:devnet');
const custody = (asset: string, address: string) =>
  posted(`assets:custody:devnet:${asset}:${address}`);

async function outgoing(txHash: string) {
  const { rows } = await database.pool.query(
    `select log_index, kind, status, reincluded, amount::text, fee_base_units::text as fee, entry_id, fee_entry_id
       from outgoing_transfers where tx_hash = $1 order by id`,
    [txHash],
  );
  return rows;
}

async function entryLines(entryId: string) {
  return (await runtime.ledger.getEntry(entryId))?.postings.map((p) => [
    p.account,
    p.currency,
    p.amount.toString(),
  ]);
}

/** A USDT sweep from alice's deposit address to the treasury, signed once (sent again after a reorg). */
async function signedSweep(amountBaseUnits: bigint): Promise<{ raw: Hex; txHash: Hex }> {
  const signer = privateKeyToAccount(alice.privateKey);
  const raw = await signer.signTransaction({
    type: 'legacy',
    chainId: 1337,
    nonce: await devnet.client.getTransactionCount({ address: alice.address, blockTag: 'pending' }),
    gasPrice: GAS_PRICE,
    gas: 200_000n,
    to: usdt,
    data: encodeFunctionData({
      abi: erc20Abi,
      functionName: 'transfer',
      args: [TREASURY, amountBaseUnits],
    }),
  });
  return { raw, txHash: keccak256(raw) };
}

/** An ETH sweep of `valueWei` from alice's deposit address to the treasury, signed once. */
async function signedEthSweep(valueWei: bigint): Promise<{ raw: Hex; txHash: Hex }> {
  const signer = privateKeyToAccount(alice.privateKey);
  const raw = await signer.signTransaction({
    type: 'legacy',
    chainId: 1337,
    nonce: await devnet.client.getTransactionCount({ address: alice.address, blockTag: 'pending' }),
    gasPrice: GAS_PRICE,
    gas: 100_000n,
    to: TREASURY,
    value: valueWei,
  });
  return { raw, txHash: keccak256(raw) };
}

async function send(raw: Hex): Promise<{ status: string; feeWei: bigint }> {
  const hash = await devnet.rpc<Hex>('eth_sendRawTransaction', [raw]);
  const receipt = await devnet.client.getTransactionReceipt({ hash });
  return { status: receipt.status, feeWei: receipt.gasUsed * receipt.effectiveGasPrice };
}

async function poll(times: number) {
  for (let i = 0; i < times; i += 1) await watcher.runOnce();
}

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  stack = await startEvmStack(devnet, {
    assets: [
      { symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } },
      { symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } },
    ],
    treasuryAddresses: [TREASURY],
  });
  ({ database, runtime, adapters, watcher } = stack);
  const { address } = await stack.depositAddressOf(9101);
  // The operator's signer for the first deposit address (index 0): never held by the service.
  const { privateKey, signer } = operatorSigner(0);
  alice = { address, privateKey };
  expect(signer.address.toLowerCase()).toBe(alice.address.toLowerCase());
  await watcher.runOnce();
  // Alice's address holds 1 ETH (for gas) and 30 USDT, both credited.
  await devnet.sendEth(devnet.account(0), alice.address, 10n ** 18n);
  await devnet.transferToken(usdt, devnet.account(0), alice.address, 30_000_000n);
  await devnet.mine(4);
  await poll(2);
});
afterAll(async () => {
  await stack?.close();
});

describe('a booked sweep whose transaction a deep reorg mines again', () => {
  test('where it reverts: the sweep and its fee are reversed, the failed sweep is recorded and only its new fee booked', async () => {
    expect((await reconcile()).findings).toEqual([]);
    const beforeSweep = await devnet.snapshot();
    const { raw, txHash } = await signedSweep(10_000_000n); // 10 USDT
    const first = await send(raw);
    expect(first.status).toBe('success');
    await devnet.mine(4);
    await poll(2);
    const [booked] = await outgoing(txHash);
    expect(booked).toMatchObject({
      kind: 'sweep',
      status: 'booked',
      reincluded: 0,
      amount: '10',
      fee: first.feeWei.toString(),
    });
    expect(await entryLines(booked.entry_id)).toEqual([
      [`assets:custody:devnet:USDT:${TREASURY}`, 'USDT', '10'],
      [`assets:custody:devnet:USDT:${alice.address}`, 'USDT', '-10'],
    ]);
    expect(await fees()).toEqual(eth(first.feeWei));
    expect((await custody('USDT', alice.address)).toString()).toBe('20');
    expect((await reconcile()).findings).toEqual([]);

    // A deeper reorg than the confirmations. On the new branch USDT refuses transfers when the
    // very same transaction is mined again: it reverts, leaves no Transfer log, moves no USDT,
    // and still costs its sender a fee (another one: a revert burns other gas).
    await devnet.revert(beforeSweep);
    await devnet.setTransfersBlocked(usdt, true);
    const again = await send(raw);
    await devnet.setTransfersBlocked(usdt, false);
    expect(again.status).toBe('reverted');
    expect(again.feeWei).not.toBe(first.feeWei);
    await devnet.mine(12, { increaseTimeS: 11 });
    await poll(3);

    const [gone, failed] = await outgoing(txHash);
    expect(gone).toMatchObject({ log_index: booked.log_index, status: 'orphaned' });
    expect(failed).toMatchObject({
      log_index: -1,
      kind: 'sweep',
      status: 'failed',
      reincluded: 1,
      amount: '10',
      fee: again.feeWei.toString(),
      entry_id: null,
    });
    // Both earlier entries reversed, by the entry they reverse.
    const sweepReversal = await runtime.ledger.getReversalOf(booked.entry_id);
    const feeReversal = await runtime.ledger.getReversalOf(booked.fee_entry_id);
    // Each says what it reverses, for an accountant reading the journal.
    expect(sweepReversal).toMatchObject({
      kind: 'sweep.reversal',
      description: `sweep ${txHash}:${booked.log_index} on devnet was removed by a reorg`,
      metadata: { reason: 'reorg', chain: { network: 'devnet', txHash } },
    });
    expect(feeReversal).toMatchObject({ kind: 'network-fee.reversal' });
    const keys = await runtime.ledger.entryIdsByKey([
      `sweep-reversal:${booked.entry_id}`,
      `network-fee-reversal:${booked.fee_entry_id}`,
      `network-fee:devnet:${txHash}:reincluded-1`,
    ]);
    expect([...keys.values()]).toEqual([sweepReversal!.id, feeReversal!.id, failed.fee_entry_id]);
    // The fee of the failed inclusion, booked once: no custody moved.
    expect(await entryLines(failed.fee_entry_id)).toEqual([
      ['expenses:network-fees:devnet', 'ETH', eth(again.feeWei).toString()],
      [`assets:custody:devnet:ETH:${alice.address}`, 'ETH', eth(again.feeWei).neg().toString()],
    ]);
    expect(await fees()).toEqual(eth(again.feeWei));
    expect((await custody('USDT', alice.address)).toString()).toBe('30');
    expect((await custody('USDT', TREASURY)).toString()).toBe('0');
    expect(await custody('ETH', alice.address)).toEqual(new Decimal(1).sub(eth(again.feeWei)));
    expect(await devnet.tokenBalance(usdt, alice.address)).toBe(30_000_000n);

    // Later polls book nothing more.
    await devnet.mine(3);
    await poll(2);
    expect(await outgoing(txHash)).toEqual([gone, failed]);
    expect(await fees()).toEqual(eth(again.feeWei));
    expect((await reconcile()).findings).toEqual([]);
    expect(await runtime.ledger.checkBalances()).toEqual([]);
  });

  test('with the same outcome: it stays booked once, nothing reversed', async () => {
    const feesBefore = await fees();
    const beforeSweep = await devnet.snapshot();
    const { raw, txHash } = await signedSweep(5_000_000n); // 5 USDT
    const first = await send(raw);
    expect(first.status).toBe('success');
    await devnet.mine(4);
    await poll(2);
    const [booked] = await outgoing(txHash);
    expect(booked).toMatchObject({ kind: 'sweep', status: 'booked', reincluded: 0 });

    // The new branch mines the same transaction, with the same outcome and fee, in another block.
    await devnet.revert(beforeSweep);
    await devnet.mine(1, { increaseTimeS: 3 });
    const again = await send(raw);
    expect(again).toEqual(first);
    await devnet.mine(12, { increaseTimeS: 11 });
    await poll(3);

    expect(await outgoing(txHash)).toEqual([booked]);
    expect(await runtime.ledger.getReversalOf(booked.entry_id)).toBeNull();
    expect(await runtime.ledger.getReversalOf(booked.fee_entry_id)).toBeNull();
    expect((await fees()).sub(feesBefore)).toEqual(eth(first.feeWei));
    expect((await custody('USDT', alice.address)).toString()).toBe('25');
    expect((await custody('USDT', TREASURY)).toString()).toBe('5');
    expect((await reconcile()).findings).toEqual([]);
    expect(await runtime.ledger.checkBalances()).toEqual([]);
  });

  test('an ETH sweep where it reverts: the same transfer, now failed, is reversed and booked again as a fee alone', async () => {
    const feesBefore = await fees();
    const ethBefore = await custody('ETH', alice.address);
    const beforeSweep = await devnet.snapshot();
    const { raw, txHash } = await signedEthSweep(10n ** 17n); // 0.1 ETH
    const first = await send(raw);
    expect(first.status).toBe('success');
    await devnet.mine(4);
    await poll(2);
    const [booked] = await outgoing(txHash);
    expect(booked).toMatchObject({ log_index: -1, kind: 'sweep', status: 'booked', amount: '0.1' });
    expect((await custody('ETH', TREASURY)).toString()).toBe('0.1');

    // On the new branch the treasury refuses ether (code PUSH1 0 PUSH1 0 REVERT) when the same
    // transaction is mined again: seen under the same identity (log index -1), failed.
    await devnet.revert(beforeSweep);
    await devnet.rpc('evm_setAccountCode', [TREASURY, '0x60006000fd']);
    const again = await send(raw);
    await devnet.rpc('evm_setAccountCode', [TREASURY, '0x']);
    expect(again.status).toBe('reverted');
    await devnet.mine(12, { increaseTimeS: 11 });
    await poll(3);

    const rows = await outgoing(txHash);
    expect(rows).toEqual([
      expect.objectContaining({
        log_index: -1,
        kind: 'sweep',
        status: 'failed',
        reincluded: 1,
        fee: again.feeWei.toString(),
        entry_id: null,
        fee_entry_id: expect.any(String),
      }),
    ]);
    expect(await runtime.ledger.getReversalOf(booked.entry_id)).not.toBeNull();
    expect(await runtime.ledger.getReversalOf(booked.fee_entry_id)).not.toBeNull();
    expect(rows[0].fee_entry_id).not.toBe(booked.fee_entry_id);
    expect((await fees()).sub(feesBefore)).toEqual(eth(again.feeWei));
    expect((await custody('ETH', TREASURY)).toString()).toBe('0');
    expect(await custody('ETH', alice.address)).toEqual(ethBefore.sub(eth(again.feeWei)));
    await devnet.mine(3);
    await poll(2);
    expect(await outgoing(txHash)).toEqual(rows);
    expect((await reconcile()).findings).toEqual([]);
    expect(await runtime.ledger.checkBalances()).toEqual([]);
  });

  test('a failed sweep whose fee is booked, mined again failed in another block: its fee stays booked once', async () => {
    const feesBefore = await fees();
    await devnet.rpc('evm_setAccountCode', [TREASURY, '0x60006000fd']);
    const beforeSweep = await devnet.snapshot();
    const { raw, txHash } = await signedEthSweep(10n ** 17n);
    const first = await send(raw);
    expect(first.status).toBe('reverted');
    await devnet.mine(4);
    await poll(2);
    const [failed] = await outgoing(txHash);
    expect(failed).toMatchObject({ status: 'failed', reincluded: 0, entry_id: null });
    expect(failed.fee_entry_id).not.toBeNull();

    await devnet.revert(beforeSweep);
    await devnet.mine(1, { increaseTimeS: 3 });
    const again = await send(raw);
    expect(again).toEqual(first);
    await devnet.rpc('evm_setAccountCode', [TREASURY, '0x']);
    await devnet.mine(12, { increaseTimeS: 11 });
    await poll(3);

    expect(await outgoing(txHash)).toEqual([failed]);
    expect(await runtime.ledger.getReversalOf(failed.fee_entry_id)).toBeNull();
    expect((await fees()).sub(feesBefore)).toEqual(eth(first.feeWei));
    expect((await reconcile()).findings).toEqual([]);
    expect(await runtime.ledger.checkBalances()).toEqual([]);
  });
});
