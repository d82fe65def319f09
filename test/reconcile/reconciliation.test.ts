import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { createWatcher } from '../../chain-watchers/pipeline/createWatcher.js';
import type { DepositWatcher } from '../../chain-watchers/pipeline/depositWatcher.js';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createLogger } from '../../src/log.js';
import { latestReconciliation, runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { type Runtime } from '../../src/runtime.js';
import type { TestDatabase } from '../support/db.js';
import { startEvmStack, type EvmStack } from '../support/evm/stack.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';

/**
 * Books that disagree with the chain on purpose, each found with the right numbers, and a
 * clean book that produces no finding.
 */

let devnet: Devnet;
let stack: EvmStack;
let database: TestDatabase;
let runtime: Runtime;
let adapters: Map<string, ChainAdapter>;
let watcher: DepositWatcher;
let usdt: Address;
let alice: { id: string; address: Address };
let early: { id: string; address: Address };
let unseenTransfer: string;

async function sync(blocks = 4) {
  await devnet.mine(blocks);
  for (let i = 0; i < 3; i += 1) await watcher.runOnce();
}

const reconcile = () => runReconciliation(runtime, { trigger: 'test', adapters });

/** `lingxi_reconcile_findings` by severity, as this process's /metrics shows it. */
async function findingsGauge(): Promise<Record<string, number>> {
  const metric = await runtime.metrics.reconcileFindings.get();
  return Object.fromEntries(metric.values.map((v) => [String(v.labels['severity']), v.value]));
}

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  stack = await startEvmStack(devnet, {
    assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
    confirmations: 2,
  });
  ({ database, runtime, adapters, watcher } = stack);
  alice = await stack.depositAddressOf(6001);
  early = await stack.depositAddressOf(6002);
  // Sent before the watcher ever starts: no watcher sees it (it begins at the head).
  unseenTransfer = (await devnet.transferToken(usdt, devnet.account(0), early.address, 4_200_000n))
    .txHash;
  await devnet.mine(1);
  await watcher.runOnce();
});
afterAll(async () => {
  await stack?.close();
});

test('a transfer to one of our addresses that no watcher saw is a custody mismatch of exactly its amount', async () => {
  await devnet.transferToken(usdt, devnet.account(0), alice.address, 10_000_000n);
  await sync();
  const run = await reconcile();
  expect(run.status).toBe('findings');
  expect(run.findings).toEqual([
    {
      severity: 'error',
      kind: 'custody_mismatch',
      network: 'devnet',
      asset: 'USDT',
      address: early.address,
      account: `assets:custody:devnet:USDT:${early.address}`,
      currency: 'USDT',
      expected: '0',
      actual: '4.2',
      difference: '4.2',
      details: expect.objectContaining({ custody: '0' }),
      fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/),
    },
  ]);
  expect(unseenTransfer).toMatch(/^0x/);
  // Stored, and readable as the latest run.
  const latest = await latestReconciliation(runtime);
  expect(latest?.runId).toBe(run.runId);
  expect(latest?.findings).toHaveLength(1);
  // And on /metrics, for alerting.
  expect(await findingsGauge()).toEqual({ error: 1, warning: 0, info: 0 });
});

test('once the books are put right, a clean book produces no finding', async () => {
  // The operator books the unseen deposit by hand: custody in, customer credited.
  await runtime.ledger.postEntry({
    kind: 'deposit',
    metadata: {
      chain: { network: 'devnet', txHash: unseenTransfer, logIndex: 0, blockNumber: '1' },
      rate: '1',
      rateSource: 'fixed',
    },
    postings: [
      { account: `assets:custody:devnet:USDT:${early.address}`, amount: '4.2', currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: '-4.2' },
      { account: 'equity:trading:USD', amount: '4.2' },
      { account: `liabilities:customers:${early.id}`, amount: '-4.2' },
    ],
  });
  const run = await reconcile();
  expect(run.findings).toEqual([]);
  expect(run.status).toBe('clean');
  expect(Number(run.blocks['devnet'])).toBeGreaterThan(0);
  expect(await findingsGauge()).toEqual({ error: 0, warning: 0, info: 0 });
});

test('a deposit that reached its confirmations after the watcher last polled is not reported as stuck', async () => {
  await sync();
  const sent = await devnet.transferToken(usdt, devnet.account(0), alice.address, 1_500_000n);
  await watcher.runOnce(); // recorded in its block, one confirmation of two
  const status = async () =>
    (
      await database.pool.query<{ status: string }>(
        `select status from deposits where tx_hash = $1`,
        [sent.txHash],
      )
    ).rows[0]!.status;
  expect(await status()).toBe('seen');
  await devnet.mine(2); // confirmed now; the watcher has not polled since
  expect((await reconcile()).findings).toEqual([]);
  await watcher.runOnce();
  expect(await status()).toBe('credited');
  expect((await reconcile()).findings).toEqual([]);
});

test('a deposit past its confirmations that was never credited is found', async () => {
  // What a stuck watcher leaves: a recorded deposit, scanned and confirmed long ago, still confirming.
  const { rows } = await database.pool.query<{ block: string }>(
    `select credited_to::text as block from watcher_cursors`,
  );
  await database.pool.query(
    `insert into deposits (network, tx_hash, log_index, user_id, address, from_address, contract, asset, currency, decimals,
                           amount_base_units, amount, block_number, block_hash, status, confirmations, confirmations_required)
     values ('devnet', '0xstuck', 0, $1, $2, '0xsomeone', $3, 'USDT', 'USDT', 6, 1000000, 1, $4, '0xhash', 'confirming', 2, '2')`,
    [alice.id, alice.address, usdt.toLowerCase(), rows[0]!.block],
  );
  const run = await reconcile();
  expect(run.findings.find((f) => f.kind === 'deposit_not_credited')).toMatchObject({
    network: 'devnet',
    address: alice.address,
    expected: 'credited',
    actual: 'confirming',
    difference: '1',
    details: { txHash: '0xstuck', logIndex: 0 },
  });
  // The chain does not have it either: custody plus what is confirming is 1 more than the chain.
  expect(run.findings.find((f) => f.kind === 'custody_mismatch')).toMatchObject({
    address: alice.address,
    difference: '-1',
  });
  await database.pool.query(`update deposits set status = 'orphaned' where tx_hash = '0xstuck'`);
  expect((await reconcile()).findings).toEqual([]);
});

test('a credited deposit whose block is no longer canonical is found', async () => {
  const snapshot = await devnet.snapshot();
  const sent = await devnet.transferToken(usdt, devnet.account(0), alice.address, 2_500_000n);
  await sync(3);
  expect(
    (await database.pool.query(`select status from deposits where tx_hash = $1`, [sent.txHash]))
      .rows[0].status,
  ).toBe('credited');
  await devnet.revert(snapshot);
  await devnet.mine(6, { increaseTimeS: 5 });
  const run = await reconcile();
  const kinds = run.findings.map((f) => f.kind);
  expect(kinds).toContain('credited_deposit_not_canonical');
  // The chain no longer has the 2.5 the custody account says it has.
  expect(run.findings.find((f) => f.kind === 'custody_mismatch')).toMatchObject({
    address: alice.address,
    difference: '-2.5',
  });
  // The watcher then reverses it; the reversal is reported, the balances agree again.
  await sync(2);
  const after = await reconcile();
  expect(after.findings.map((f) => f.kind)).toEqual(['deposit_reversed']);
});

test('a custody posting altered in a scratch database is found with the right numbers', async () => {
  const client = await database.pool.connect();
  try {
    await client.query('alter table ledger_postings disable trigger ledger_postings_append_only');
    await client.query(
      `update ledger_postings set amount = amount - 1
        where (entry_id, line) = (select p.entry_id, p.line from ledger_postings p join ledger_accounts a on a.id = p.account_id
                     where a.code = $1 order by p.account_version limit 1)`,
      [`assets:custody:devnet:USDT:${alice.address}`],
    );
    await client.query('alter table ledger_postings enable trigger ledger_postings_append_only');
  } finally {
    client.release();
  }
  const run = await reconcile();
  const custody = run.findings.find((f) => f.kind === 'custody_mismatch');
  expect(custody).toMatchObject({
    address: alice.address,
    expected: expect.any(String),
    difference: '1',
  });
  // The ledger's own checks see the tampering too: the entry no longer balances and the cache disagrees.
  const kinds = run.findings.map((f) => f.kind);
  expect(kinds).toContain('entry_unbalanced');
  expect(kinds).toContain('balance_mismatch');
});

test('lingxi reconcile --json prints the run and exits 1 while there are findings', async () => {
  const { runCli } = await import('../../src/cli/main.js');
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const file = join(mkdtempSync(join(tmpdir(), 'lingxi-reconcile-')), 'lingxi.config.json');
  writeFileSync(
    file,
    JSON.stringify({
      ...runtime.config,
      database: { url: database.url },
      log: { level: 'silent' },
    }),
  );
  let stdout = '';
  let stderr = '';
  const code = await runCli(['reconcile', '--json', '--config', file], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
  });
  const printed = JSON.parse(stdout) as { runId: string; findings: Array<{ kind: string }> };
  expect(code).toBe(1);
  expect(printed.runId).toMatch(/^\d+$/);
  expect(printed.findings.length).toBeGreaterThan(0);
  expect(stderr).toMatch(/findings/);
});

test('a sweep from a deposit address to the treasury is booked custody to custody with its fee, and the books still reconcile', async () => {
  const { mnemonicToAccount, privateKeyToAccount } = await import('viem/accounts');
  const { toHex } = await import('viem');
  // The operator's signer for alice's deposit address (index 0): never held by the service.
  const privateKey = toHex(
    mnemonicToAccount('test test test test test test test test test test test junk', {
      addressIndex: 0,
    }).getHdKey().privateKey!,
  );
  const signer = { address: alice.address, privateKey, signer: privateKeyToAccount(privateKey) };
  const treasury = '0x7e5f4552091a69125d5dfcb7b8c2659029395bdf' as Address;
  const network = runtime.config.networks[0]!;
  network.treasuryAddresses.push(treasury);
  const sweeper = createWatcher({
    network,
    adapters,
    ledger: runtime.ledger,
    pool: runtime.database.pool,
    logger: createLogger('silent'),
  });

  // Clear the earlier deliberate mismatches so that only the sweep is in question.
  await sync(2);
  const before = (await reconcile()).findings.filter(
    (f) => f.kind === 'custody_mismatch' && f.address === alice.address,
  );
  const custodyBefore = await runtime.ledger.getBalance(
    `assets:custody:devnet:USDT:${alice.address}`,
  );
  await devnet.sendEth(devnet.account(0), alice.address, 10n ** 17n);
  const sweep = await devnet.transferToken(usdt, signer, treasury, 5_000_000n);
  await devnet.mine(3);
  for (let i = 0; i < 3; i += 1) await sweeper.runOnce();

  const { rows } = await database.pool.query(
    `select kind, status from outgoing_transfers where tx_hash = $1`,
    [sweep.txHash],
  );
  expect(rows).toEqual([{ kind: 'sweep', status: 'booked' }]);
  expect(
    (await runtime.ledger.getBalance(`assets:custody:devnet:USDT:${treasury}`)).posted.toString(),
  ).toBe('5');
  expect(
    (
      await runtime.ledger.getBalance(`assets:custody:devnet:USDT:${alice.address}`)
    ).posted.toString(),
  ).toBe(custodyBefore.posted.sub(5).toString());
  const fee = await runtime.ledger.getBalance('expenses:network-fees:devnet');
  expect(fee.currency).toBe('ETH');
  expect(fee.posted.toString()).toBe(
    new Decimal(sweep.feeWei.toString()).div(10n ** 18n).toString(),
  );
  // The treasury's USDT matches its custody account; alice's address is no worse than before.
  const after = await reconcile();
  expect(
    after.findings.filter((f) => f.kind === 'custody_mismatch' && f.address === treasury),
  ).toEqual([]);
  const difference = (findings: typeof before) => findings.map((f) => f.difference);
  expect(
    difference(
      after.findings.filter((f) => f.kind === 'custody_mismatch' && f.address === alice.address),
    ),
  ).toEqual(difference(before));
});

test('error findings are posted to the alert webhook', async () => {
  const { createServer } = await import('node:http');
  const received: Array<{ runId: string; findings: Array<{ kind: string; severity: string }> }> =
    [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body));
      res.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  const alerts = runtime.config.alerts as { webhookUrl?: string };
  alerts.webhookUrl = `http://127.0.0.1:${address.port}/hook`;
  try {
    const run = await reconcile();
    const errors = run.findings.filter((f) => f.severity === 'error');
    expect(errors.length).toBeGreaterThan(0);
    expect(received).toHaveLength(1);
    expect(received[0]!.runId).toBe(run.runId);
    expect(received[0]!.findings.map((f) => f.kind)).toEqual(errors.map((f) => f.kind));
  } finally {
    delete alerts.webhookUrl;
    server.close();
  }
});
