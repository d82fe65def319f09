import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import type { TronNetworkConfig } from '../../chain-watchers/config.js';
import { createWatcher } from '../../chain-watchers/pipeline/createWatcher.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import { createTronAdapter } from '../../chain-watchers/tron/createTronAdapter.js';
import { parseConfig } from '../../src/config/load.js';
import { getDepositAddresses } from '../../src/deposits/deposits.js';
import { createLogger } from '../../src/log.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createUser } from '../../src/users/createUser.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTronSimulator, type TronSimulator } from '../support/tron-sim/server.js';
import { DEPOSIT_XPUBS, tronNetworkFields } from '../support/tron-sim/stack.js';

/**
 * Tron: the watcher credits a deposit once its block is solidified, so balances are compared
 * at the latest solidified block (the solidity node's state), not at the head: a deposit mined
 * but not yet solidified, seen by the watcher or not, is no finding; a real difference is.
 */

const SOLIDITY_LAG = 19;
let sim: TronSimulator;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let sender: string;
let alice: string;
let bob: string;

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });
const usdt = (baseUnits: bigint) =>
  sim.chain.transferToken({ token: sim.chain.usdt, from: sender, to: alice, amount: baseUnits });

async function depositStatus(txId: string): Promise<string | undefined> {
  const { rows } = await database.pool.query<{ status: string }>(
    `select status from deposits where tx_hash = $1`,
    [txId],
  );
  return rows[0]?.status;
}

async function user(telegramId: number): Promise<string> {
  const { id } = await createUser(runtime.database.db, { telegramId });
  const [view] = await getDepositAddresses(runtime.database.db, runtime.config, id);
  return view!.address!;
}

beforeAll(async () => {
  sim = await startTronSimulator({ chainOptions: { solidityLag: SOLIDITY_LAG } });
  database = await createTestDatabase();
  sender = sim.chain.account('sender');
  sim.chain.mintToken(sim.chain.usdt, sender, 10n ** 15n);
  sim.chain.setTrxBalance(sender, 10n ** 12n);
  sim.chain.produceBlocks(SOLIDITY_LAG + 1);
  const config = parseConfig(
    {
      database: { url: database.url },
      log: { level: 'silent' },
      wallets: DEPOSIT_XPUBS,
      networks: [tronNetworkFields(sim.url, { rpcRetries: 1, startBlock: sim.chain.headNumber })],
    },
    {},
  );
  runtime = await openRuntime({ config, logger: createLogger('silent') });
  alice = await user(9001);
  bob = await user(9002);
  const network = config.networks[0] as TronNetworkConfig;
  adapters = new Map([
    [network.name, createTronAdapter(network, { requestsPerSecond: 1000, retryBaseDelayMs: 5 })],
  ]);
  watcher = createWatcher({
    network,
    adapters,
    ledger: runtime.ledger,
    pool: runtime.database.pool,
    logger: createLogger('silent'),
  });
  await watcher.runOnce();
});
afterAll(async () => {
  for (const adapter of adapters?.values() ?? []) await adapter.close();
  await runtime?.close();
  await database?.drop();
  await sim?.close();
});

test('a deposit mined after the watcher last polled, not yet solidified, is no finding', async () => {
  expect((await reconcile()).findings).toEqual([]);
  const tx = usdt(10_000_000n);
  sim.chain.produceBlocks(1); // at the head; the watcher has not polled since
  expect(sim.chain.tokenBalance(sim.chain.usdt, alice)).toBe(10_000_000n);

  expect((await reconcile()).findings).toEqual([]);

  // Seen by the watcher, still not solidified: not credited, still no finding.
  await watcher.runOnce();
  expect(await depositStatus(tx)).toBe('seen');
  expect((await reconcile()).findings).toEqual([]);
  // Solidified, not credited yet (the watcher has not polled since): the balances agree, and
  // the deposit is not reported as stuck, since the watcher could not credit it yet.
  sim.chain.produceBlocks(SOLIDITY_LAG);
  expect((await reconcile()).findings).toEqual([]);
  // Credited.
  await watcher.runOnce();
  expect(await depositStatus(tx)).toBe('credited');
  expect((await reconcile()).findings).toEqual([]);
});

test('a zero-value transferFrom "from" a deposit address (address-poisoning spam) is no outflow finding', async () => {
  expect((await reconcile()).findings).toEqual([]);
  // Anyone may call USDT's transferFrom(ours, theirs, 0): it needs no allowance and logs a
  // Transfer out of our address that moves nothing.
  const spammer = sim.chain.account('poisoner');
  sim.chain.setTrxBalance(spammer, 10n ** 9n);
  const spam = sim.chain.transferFromToken({
    token: sim.chain.usdt,
    spender: spammer,
    from: alice,
    to: sim.chain.account('alice-lookalike'),
    amount: 0n,
  });
  sim.chain.produceBlocks(SOLIDITY_LAG + 1);
  await watcher.runOnce();
  const { rows } = await database.pool.query<{ amount: string; fee: string | null }>(
    `select amount::text, fee_base_units::text as fee from outgoing_transfers where tx_hash = $1`,
    [spam],
  );
  expect(rows).toEqual([{ amount: '0', fee: '0' }]);
  expect((await reconcile()).findings).toEqual([]);
});

test('a real difference beside a deposit not yet solidified is found, with its exact amount', async () => {
  // USDT no transaction brought (test setup): no watcher will ever see it.
  sim.chain.mintToken(sim.chain.usdt, bob, 7_000_000n);
  sim.chain.produceBlocks(SOLIDITY_LAG); // solidified
  await watcher.runOnce();
  sim.chain.transferToken({ token: sim.chain.usdt, from: sender, to: bob, amount: 3_000_000n });
  sim.chain.produceBlocks(1);

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      kind: 'custody_mismatch',
      asset: 'USDT',
      address: bob,
      expected: '0',
      actual: '7',
      difference: '7',
      details: expect.objectContaining({
        block: String(sim.chain.solidifiedNumber),
        confirmingDeposits: '0',
      }),
    }),
  ]);
});

test('balances solidified above what the watcher has scanned are not compared: a warning says so', async () => {
  // Bob's deposit of the test before is solidified and credited; only his 7 USDT differ.
  sim.chain.produceBlocks(SOLIDITY_LAG);
  await watcher.runOnce();
  expect((await reconcile()).findings).toEqual([
    expect.objectContaining({ kind: 'custody_mismatch', address: bob, difference: '7' }),
  ]);
  // A deposit solidified while the watcher was stopped: the books cannot know it yet.
  usdt(2_000_000n);
  sim.chain.produceBlocks(SOLIDITY_LAG + 5);
  const scannedTo = (
    await database.pool.query<{ block: string }>(
      `select block_number::text as block from watcher_cursors where network = 'tron'`,
    )
  ).rows[0]!.block;
  expect(BigInt(scannedTo)).toBeLessThan(BigInt(sim.chain.solidifiedNumber));

  const run = await reconcile();
  expect(run.findings).toEqual([
    expect.objectContaining({
      severity: 'warning',
      kind: 'watcher_behind',
      network: 'tron',
      details: {
        balancesAt: String(sim.chain.solidifiedNumber),
        scannedTo,
        balancesNotCompared: 2,
      },
    }),
  ]);

  // Once the watcher catches up, the deposit is credited and bob's real difference is back.
  await watcher.runOnce();
  expect((await reconcile()).findings).toEqual([
    expect.objectContaining({ kind: 'custody_mismatch', address: bob, difference: '7' }),
  ]);
});

test('USDT that really leaves a deposit address, not to the treasury, is one unexpected outflow, no custody mismatch beside it', async () => {
  sim.chain.setTrxBalance(alice, 10n ** 8n);
  const out = sim.chain.transferToken({
    token: sim.chain.usdt,
    from: alice,
    to: sim.chain.account('outsider'),
    amount: 2_500_000n,
  });
  sim.chain.produceBlocks(SOLIDITY_LAG + 1);
  await watcher.runOnce();
  expect((await reconcile()).findings).toEqual([
    // Bob's 7 USDT of the tests before, unchanged.
    expect.objectContaining({ kind: 'custody_mismatch', address: bob, difference: '7' }),
    expect.objectContaining({
      severity: 'error',
      kind: 'unexpected_outflow',
      asset: 'USDT',
      address: alice,
      actual: '2.5',
      difference: '-2.5',
      details: expect.objectContaining({ txHash: out }),
    }),
  ]);
});

test('an outflow beside an unexplained difference: the outflow, and a mismatch of only the difference', async () => {
  sim.chain.setTrxBalance(bob, 10n ** 8n);
  const out = sim.chain.transferToken({
    token: sim.chain.usdt,
    from: bob,
    to: sim.chain.account('outsider'),
    amount: 1_000_000n,
  });
  sim.chain.produceBlocks(SOLIDITY_LAG + 1);
  await watcher.runOnce();
  const findings = (await reconcile()).findings;
  expect(findings.map((f) => [f.kind, f.address, f.difference])).toEqual([
    // Bob's 7 USDT no transaction brought: all of it, not 7 less the 1 that left.
    ['custody_mismatch', bob, '7'],
    ['unexpected_outflow', alice, '-2.5'],
    ['unexpected_outflow', bob, '-1'],
  ]);
  expect(findings[0]!.details).toMatchObject({ unexpectedOutflows: '1' });
  expect(findings[2]).toMatchObject({
    severity: 'error',
    asset: 'USDT',
    actual: '1',
    details: { txHash: out },
  });
});
