import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { runCli } from '../../src/cli/main.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import type { Runtime } from '../../src/runtime.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startEvmStack, type EvmStack } from '../support/evm/stack.js';

/**
 * Deposits that a reorg removed after they were credited. The books explain a reversal (the
 * reversal entry, and a receivable for what the customer had already spent): it is an error
 * only while that receivable is owed and no operator has acknowledged it; one that owes nothing
 * is reported once, for information. Neither keeps `lingxi reconcile` exiting 1 for ever.
 */

let devnet: Devnet;
let stack: EvmStack;
let runtime: Runtime;
let usdt: Address;
let configFile: string;
/** Spends 30 of a 40 deposit, then writes the receivable off. */
let bob: { id: string; address: Address };
/** Spends nothing of a 10 deposit. */
let carol: { id: string; address: Address };
/** Spends 5 of a 20 deposit; an operator acknowledges the receivable. */
let dave: { id: string; address: Address };

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli([...args, '--json', '--config', configFile], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
  });
  return { code, stdout, stderr };
}

async function spend(userId: string, amount: string) {
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: `liabilities:customers:${userId}`, amount },
      { account: 'expenses:promotions', amount: `-${amount}` },
    ],
  });
}

const reversals = <F extends { kind: string }>(findings: F[]): F[] =>
  findings.filter((f) => f.kind === 'deposit_reversed');

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  stack = await startEvmStack(devnet, {
    assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
    confirmations: 2,
  });
  runtime = stack.runtime;
  bob = await stack.depositAddressOf(9001);
  carol = await stack.depositAddressOf(9002);
  dave = await stack.depositAddressOf(9003);
  configFile = join(mkdtempSync(join(tmpdir(), 'lingxi-reversals-')), 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      ...runtime.config,
      database: { url: stack.database.url },
      log: { level: 'silent' },
    }),
  );
  await stack.poll();

  // Three deposits credited, two of them partly spent, then removed by a reorg.
  const snapshot = await devnet.snapshot();
  await devnet.transferToken(usdt, devnet.account(0), bob.address, 40_000_000n);
  await devnet.transferToken(usdt, devnet.account(0), carol.address, 10_000_000n);
  await devnet.transferToken(usdt, devnet.account(0), dave.address, 20_000_000n);
  await devnet.mine(4);
  await stack.poll(2);
  const { rows } = await stack.database.pool.query(`select status from deposits`);
  expect(rows.map((r) => r.status)).toEqual(['credited', 'credited', 'credited']);
  await spend(bob.id, '30');
  await spend(dave.id, '5');
  await devnet.revert(snapshot);
  await devnet.mine(8, { increaseTimeS: 11 });
  await stack.poll(3);
  const after = await stack.database.pool.query(`select status from deposits`);
  expect(after.rows.map((r) => r.status)).toEqual(['reversed', 'reversed', 'reversed']);
});
afterAll(async () => {
  await stack?.close();
});

test('a reversal that left a receivable owed is an error; one that owes nothing is info, reported once', async () => {
  const first = await stack.reconcile();
  expect(first.findings.filter((f) => f.kind !== 'deposit_reversed')).toEqual([]);
  expect(
    reversals(first.findings)
      .map((f) => [f.address, f.severity, f.difference, f.details['receivableOwed']])
      .sort(),
  ).toEqual(
    [
      [bob.address, 'error', '-40', '30'],
      [carol.address, 'info', '-10', '0'],
      [dave.address, 'error', '-20', '5'],
    ].sort(),
  );
  expect(first.status).toBe('findings');

  // Carol's is not reported again; the two owed stay errors, and the command exits 1.
  const { code, stdout } = await cli('reconcile');
  expect(code).toBe(1);
  const second = JSON.parse(stdout) as {
    findings: Array<{ kind: string; address: string; severity: string }>;
  };
  expect(second.findings.map((f) => [f.address, f.severity]).sort()).toEqual(
    [
      [bob.address, 'error'],
      [dave.address, 'error'],
    ].sort(),
  );
});

test('a receivable written off resolves its reversal; an acknowledged one is left out, recorded in the audit log', async () => {
  // Bob's 30 will not be recovered: the accountant writes it off.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: 'expenses:losses', amount: '30' },
      { account: `assets:receivables:customers:${bob.id}`, amount: '-30' },
    ],
  });
  const run = await stack.reconcile();
  const daves = reversals(run.findings);
  expect(daves.map((f) => [f.address, f.severity])).toEqual([[dave.address, 'error']]);

  // A fingerprint the latest run does not have: refused, nothing recorded.
  const unknown = await cli('reconcile', 'ack', '0123456789abcdef', '--reason', 'typo');
  expect(unknown.code).not.toBe(0);
  expect(unknown.stderr).toMatch(/finding_not_found|no finding/);

  // A run that failed since (the RPC down: no adapter) has no findings; it is not the one acted on.
  await expect(
    runReconciliation(runtime, { trigger: 'test', adapters: new Map() }),
  ).rejects.toThrow(/no adapter/);
  // Dave's 5 is left owed on purpose: the operator acknowledges it.
  const ack = await cli(
    'reconcile',
    'ack',
    daves[0]!.fingerprint,
    '--reason',
    'collected off-chain',
  );
  expect(ack.code).toBe(0);
  expect(JSON.parse(ack.stdout)).toMatchObject({
    fingerprint: daves[0]!.fingerprint,
    runId: run.runId,
    finding: { kind: 'deposit_reversed', address: dave.address },
  });
  const again = await cli('reconcile', 'ack', daves[0]!.fingerprint, '--reason', 'twice');
  expect(again.code).not.toBe(0);
  expect(again.stderr).toMatch(/already/);
  const { rows } = await stack.database.pool.query(
    `select actor, target, details from audit_log where action = 'reconciliation.acknowledge'`,
  );
  expect(rows).toEqual([
    {
      actor: expect.stringMatching(/^cli:/),
      target: `finding:${daves[0]!.fingerprint}`,
      details: expect.objectContaining({ kind: 'deposit_reversed', reason: 'collected off-chain' }),
    },
  ]);

  const clean = await cli('reconcile');
  expect(clean.code).toBe(0);
  const printed = JSON.parse(clean.stdout) as { status: string; findings: unknown[] };
  expect(printed).toMatchObject({ status: 'clean', findings: [] });
  const latest = await stack.reconcile();
  expect(latest.stats['acknowledged']).toBe(1);
});

test('acknowledged reversals do not crowd live ones out of the listed few', async () => {
  // Bob's receivable is owed again (the write-off reversed by hand): his reversal is an error
  // again, beside Dave's, acknowledged. With one finding listed per kind, Bob's must be it.
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    postings: [
      { account: `assets:receivables:customers:${bob.id}`, amount: '30' },
      { account: 'expenses:losses', amount: '-30' },
    ],
  });
  const run = await runReconciliation(runtime, {
    trigger: 'test',
    adapters: stack.adapters,
    findingsListed: 1,
  });
  expect(reversals(run.findings).map((f) => [f.address, f.severity])).toEqual([
    [bob.address, 'error'],
  ]);
});
