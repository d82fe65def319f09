import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { acknowledgeFinding } from '../../src/reconcile/acknowledgeFinding.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { type Runtime } from '../../src/runtime.js';
import type { TestDatabase } from '../support/db.js';
import { operatorSigner, startEvmStack, type EvmStack, eth } from '../support/evm/stack.js';
import { startDevnet, type Devnet, type DevnetAccount } from '../support/evm/devnet.js';

/**
 * EVM: a sweep out of a deposit address that is mined but not yet booked (reconciliation ran
 * between two watcher polls). Its amount and its network fee have left the chain balance but
 * not the custody accounts yet; both are accounted for, the fee once per transaction.
 */

const TREASURY = '0x7e5f4552091a69125d5dfcb7b8c2659029395bdf' as Address;
let devnet: Devnet;
let stack: EvmStack;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
let alice: DevnetAccount;

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });

async function outgoing(txHash: string): Promise<Array<{ status: string; fee: string | null }>> {
  const { rows } = await database.pool.query(
    `select status, fee_base_units::text as fee from outgoing_transfers where tx_hash = $1 order by log_index`,
    [txHash],
  );
  return rows;
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
  const { address } = await stack.depositAddressOf(7001);
  // The operator's signer for the first deposit address (index 0): never held by the service.
  alice = { address, ...operatorSigner(0) };
  expect(alice.signer.address.toLowerCase()).toBe(alice.address.toLowerCase());
  await watcher.runOnce();
  // Alice's address holds ETH (for gas) and USDT, both credited.
  await devnet.sendEth(devnet.account(0), alice.address, 10n ** 18n);
  await devnet.transferToken(usdt, devnet.account(0), alice.address, 30_000_000n);
  await devnet.mine(4);
  for (let i = 0; i < 2; i += 1) await watcher.runOnce();
});
afterAll(async () => {
  await stack?.close();
});

test('the books start clean: ETH and USDT credited to the deposit address', async () => {
  const run = await reconcile();
  expect(run.findings).toEqual([]);
  expect(
    (
      await runtime.ledger.getBalance(`assets:custody:devnet:ETH:${alice.address}`)
    ).posted.toString(),
  ).toBe('1');
});

test('a sweep mined but not yet booked: its fee, counted once for a transaction of two transfers, is no finding', async () => {
  // One transaction, two Transfer logs from the deposit address: two rows, each carrying the fee.
  const sweep = await devnet.transferTokenMany(usdt, alice, [
    { to: TREASURY, amountBaseUnits: 10_000_000n },
    { to: TREASURY, amountBaseUnits: 5_000_000n },
  ]);
  await watcher.runOnce(); // records the sweep: not confirmed yet, so not booked
  await devnet.mine(3); // now confirmed, but the watcher has not polled again
  expect(await outgoing(sweep.txHash)).toEqual([
    { status: 'seen', fee: sweep.feeWei.toString() },
    { status: 'seen', fee: sweep.feeWei.toString() },
  ]);
  // The chain has paid the fee; the custody account does not know yet.
  const chainEth = await devnet.client.getBalance({ address: alice.address });
  const custodyEth = await runtime.ledger.getBalance(`assets:custody:devnet:ETH:${alice.address}`);
  expect(custodyEth.posted.sub(eth(chainEth)).toString()).toBe(eth(sweep.feeWei).toString());

  const run = await reconcile();
  expect(run.findings).toEqual([]);
  expect(run.blocks['devnet']).toBe(sweep.blockNumber.toString());

  // Booked on the next poll: fee once, sweep custody to custody; still clean.
  await watcher.runOnce();
  expect((await outgoing(sweep.txHash)).map((o) => o.status)).toEqual(['booked', 'booked']);
  expect((await runtime.ledger.getBalance('expenses:network-fees:devnet')).posted.toString()).toBe(
    eth(sweep.feeWei).toString(),
  );
  expect((await reconcile()).findings).toEqual([]);
});

test('a sweep into a treasury that has a custody account, not yet booked, is no finding either', async () => {
  // The treasury's custody account exists now (the first sweep booked it): it is compared.
  const sweep = await devnet.transferToken(usdt, alice, TREASURY, 1_000_000n);
  await watcher.runOnce();
  await devnet.mine(3);
  expect(await outgoing(sweep.txHash)).toEqual([{ status: 'seen', fee: sweep.feeWei.toString() }]);
  expect(await devnet.tokenBalance(usdt, TREASURY)).toBe(16_000_000n);
  expect(
    (await runtime.ledger.getBalance(`assets:custody:devnet:USDT:${TREASURY}`)).posted.toString(),
  ).toBe('15');

  expect((await reconcile()).findings).toEqual([]);
  await watcher.runOnce();
  expect((await reconcile()).findings).toEqual([]);
});

test('real discrepancies beside an unbooked sweep are still found, with their exact amounts', async () => {
  // A custody entry the chain does not back: 0.25 ETH booked by hand, no transaction.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: { reason: 'test: a custody entry the chain does not back' },
    postings: [
      { account: `assets:custody:devnet:ETH:${alice.address}`, amount: '0.25', currency: 'ETH' },
      { account: 'equity:trading:ETH', amount: '-0.25' },
    ],
  });
  // USDT that reaches the treasury outside any sweep: no watcher books it.
  await devnet.mint(usdt, TREASURY, 2_000_000n);
  const sweep = await devnet.transferToken(usdt, alice, TREASURY, 1_000_000n);
  await watcher.runOnce();
  await devnet.mine(3);
  expect((await outgoing(sweep.txHash)).map((o) => o.status)).toEqual(['seen']);

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      kind: 'custody_mismatch',
      asset: 'ETH',
      address: alice.address,
      difference: '-0.25',
      details: expect.objectContaining({
        block: sweep.blockNumber.toString(),
        unbookedOutgoing: '0',
        unbookedFees: eth(sweep.feeWei).toString(),
      }),
    }),
    expect.objectContaining({
      kind: 'custody_mismatch',
      asset: 'USDT',
      address: TREASURY,
      difference: '2',
      details: expect.objectContaining({ confirmingDeposits: '0', unbookedSweepsIn: '1' }),
    }),
  ]);
});

type Findings = Awaited<ReturnType<typeof reconcile>>['findings'];
const summary = (findings: Findings) =>
  findings.map((f) => [f.kind, f.asset, f.address, f.difference]);
/** The two discrepancies the test before left, unchanged by what follows. */
const LEFT_BEFORE = [
  ['custody_mismatch', 'ETH', null, '-0.25'],
  ['custody_mismatch', 'USDT', TREASURY, '2'],
];
const aboutAliceUsdt = (findings: Findings) =>
  findings.filter((f) => f.address === alice.address && f.asset === 'USDT');
const others = (findings: Findings) =>
  summary(findings.filter((f) => !(f.address === alice.address && f.asset === 'USDT'))).map(
    ([kind, asset, address, difference]) => [
      kind,
      asset,
      address === alice.address ? null : address,
      difference,
    ],
  );

test('an unexpected outflow is reported until it is booked by hand, naming its transaction', async () => {
  const stranger = '0x2b5ad5c4795c026514f8317c7a215e218dccd6cf' as Address;
  const sent = await devnet.transferToken(usdt, alice, stranger, 2_000_000n);
  await devnet.mine(3);
  await watcher.runOnce();
  expect(await outgoing(sent.txHash)).toEqual([
    { status: 'unbooked', fee: sent.feeWei.toString() },
  ]);
  // One event, one finding: the custody account still counts the 2 USDT that left, but the
  // outflow finding says so; no custody_mismatch of the same money beside it.
  const run = await reconcile();
  expect(others(run.findings)).toEqual(LEFT_BEFORE);
  expect(aboutAliceUsdt(run.findings)).toEqual([
    expect.objectContaining({
      severity: 'error',
      kind: 'unexpected_outflow',
      asset: 'USDT',
      address: alice.address,
      actual: '2',
      difference: '-2',
      details: {
        txHash: sent.txHash,
        logIndex: 0,
        to: stranger,
        blockNumber: sent.blockNumber.toString(),
      },
    }),
  ]);
  // Explained (say, a refund the operator sent): booked by hand, naming the transfer.
  await runtime.ledger.postEntry({
    kind: 'manual',
    metadata: {
      chain: {
        network: 'devnet',
        txHash: sent.txHash,
        logIndex: 0,
        blockNumber: sent.blockNumber.toString(),
      },
    },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice.address}`, amount: '-2', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '2' },
      { account: 'equity:trading:USD', amount: '-2' },
      { account: 'expenses:losses', amount: '2' },
    ],
  });
  const booked = await reconcile();
  expect(aboutAliceUsdt(booked.findings)).toEqual([]);
  expect(others(booked.findings)).toEqual(LEFT_BEFORE);
});

test('an outflow beside an unexplained difference: the outflow, and a mismatch of only the difference', async () => {
  const stranger = '0x6813eb9362372eef6200f3b1dbc3f819671cba69' as Address;
  const sent = await devnet.transferToken(usdt, alice, stranger, 1_500_000n);
  await devnet.mine(3);
  await watcher.runOnce();
  expect((await outgoing(sent.txHash)).map((o) => o.status)).toEqual(['unbooked']);
  // A custody entry the chain does not back: 0.3 USDT no outflow explains.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: { reason: 'test: a custody entry the chain does not back' },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice.address}`, amount: '0.3', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-0.3' },
    ],
  });

  const run = await reconcile();
  expect(others(run.findings)).toEqual(LEFT_BEFORE);
  const aboutAlice = aboutAliceUsdt(run.findings);
  expect(summary(aboutAlice)).toEqual([
    ['custody_mismatch', 'USDT', alice.address, '-0.3'],
    ['unexpected_outflow', 'USDT', alice.address, '-1.5'],
  ]);
  expect(aboutAlice[0]!.details).toMatchObject({ unexpectedOutflows: '1.5' });
  expect(aboutAlice[1]!.details).toMatchObject({ txHash: sent.txHash });

  // Acknowledged without being booked: the outflow leaves the run, and the custody account
  // still counts its 1.5 USDT, so the mismatch is all of it until it is booked.
  await acknowledgeFinding(runtime, {
    fingerprint: aboutAlice[1]!.fingerprint,
    reason: 'test: explained, not booked yet',
    audit: { actor: 'test' },
  });
  const acknowledged = await reconcile();
  expect(summary(aboutAliceUsdt(acknowledged.findings))).toEqual([
    ['custody_mismatch', 'USDT', alice.address, '-1.8'],
  ]);
  expect(others(acknowledged.findings)).toEqual(LEFT_BEFORE);
  // Booked by hand: only the 0.3 nobody explained is left.
  await runtime.ledger.postEntry({
    kind: 'manual',
    metadata: {
      chain: {
        network: 'devnet',
        txHash: sent.txHash,
        logIndex: 0,
        blockNumber: sent.blockNumber.toString(),
      },
    },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice.address}`, amount: '-1.5', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '1.5' },
      { account: 'equity:trading:USD', amount: '-1.5' },
      { account: 'expenses:losses', amount: '1.5' },
    ],
  });
  expect(summary(aboutAliceUsdt((await reconcile()).findings))).toEqual([
    ['custody_mismatch', 'USDT', alice.address, '-0.3'],
  ]);
});
