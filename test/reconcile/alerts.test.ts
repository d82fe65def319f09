import { createServer, type Server } from 'node:http';
import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Runtime } from '../../src/runtime.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startEvmStack, type EvmStack } from '../support/evm/stack.js';

/**
 * The alert webhook is told when an error finding appears, changes or is resolved, not again on
 * every run that still has it; a post that fails is retried within the run and, still failing,
 * posted again by the next run.
 */

interface Alert {
  runId: string;
  findings: Array<{
    kind: string;
    address?: string;
    difference: string;
    alert: string;
    previous?: string;
  }>;
  resolved: Array<{ kind: string; address?: string; difference: string }>;
  open: number;
}

let devnet: Devnet;
let stack: EvmStack;
let runtime: Runtime;
let usdt: Address;
let early: { id: string; address: Address };
let alice: { id: string; address: Address };
let unseenTransfer: string;
let server: Server;
/** Every post the webhook received, answered or not. */
const posts: Alert[] = [];
/** What the webhook answers. */
let answer = 200;

async function alertStatus(
  runId: string,
): Promise<{ alert_status: string; alert_error: string | null }> {
  const { rows } = await stack.database.pool.query(
    `select alert_status, alert_error from reconciliation_runs where id = $1`,
    [runId],
  );
  return rows[0];
}

/** A custody entry the chain does not back: a mismatch of exactly `amount` at alice's address. */
async function unbackedCustody(amount: string) {
  await runtime.ledger.postEntry({
    kind: 'adjustment',
    metadata: { reason: 'test: a custody entry the chain does not back' },
    postings: [
      { account: `assets:custody:devnet:USDT:${alice.address}`, amount, currency: 'USDT' },
      { account: 'equity:trading:USDT', amount: `-${amount}` },
    ],
  });
}

beforeAll(async () => {
  devnet = await startDevnet();
  usdt = await devnet.deployToken(6, { symbol: 'USDT' });
  await devnet.mint(usdt, devnet.account(0).address, 10n ** 13n);
  stack = await startEvmStack(devnet, {
    assets: [{ symbol: 'USDT', contract: usdt, decimals: 6, price: { fixed: '1' } }],
    confirmations: 2,
  });
  runtime = stack.runtime;
  early = await stack.depositAddressOf(8001);
  alice = await stack.depositAddressOf(8002);
  // Sent before the watcher ever starts: no watcher sees it, a custody mismatch of 4.2.
  unseenTransfer = (await devnet.transferToken(usdt, devnet.account(0), early.address, 4_200_000n))
    .txHash;
  await devnet.mine(1);
  await stack.poll();
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      posts.push(JSON.parse(body) as Alert);
      res.statusCode = answer;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const alerts = runtime.config.alerts as { webhookUrl?: string; attempts: number };
  alerts.webhookUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
  alerts.attempts = 2;
});
afterAll(async () => {
  server?.close();
  await stack?.close();
});

test('a new error finding is alerted once; later runs that still have it post nothing', async () => {
  const first = await stack.reconcile();
  expect(first.findings.map((f) => [f.kind, f.address])).toEqual([
    ['custody_mismatch', early.address],
  ]);
  expect(posts).toEqual([
    expect.objectContaining({
      runId: first.runId,
      findings: [
        expect.objectContaining({
          kind: 'custody_mismatch',
          address: early.address,
          difference: '4.2',
          alert: 'new',
        }),
      ],
      resolved: [],
      open: 1,
    }),
  ]);
  expect(await alertStatus(first.runId)).toEqual({ alert_status: 'sent', alert_error: null });

  // A deposit that the watcher credits moves the address's balance on both sides: the same
  // mismatch of 4.2, nothing to say again.
  await devnet.transferToken(usdt, devnet.account(0), early.address, 1_000_000n);
  await devnet.mine(3);
  await stack.poll(2);
  const second = await stack.reconcile();
  expect(second.findings).toEqual([
    expect.objectContaining({
      kind: 'custody_mismatch',
      expected: '1',
      actual: '5.2',
      difference: '4.2',
    }),
  ]);
  expect(second.findings[0]!.fingerprint).toBe(first.findings[0]!.fingerprint);
  await stack.reconcile();
  expect(posts).toHaveLength(1);
  expect(await alertStatus(second.runId)).toEqual({ alert_status: 'unchanged', alert_error: null });
});

test('a second finding is alerted alone, the open one is not repeated', async () => {
  await unbackedCustody('0.5');
  const run = await stack.reconcile();
  expect(run.findings).toHaveLength(2);
  expect(posts).toHaveLength(2);
  expect(posts[1]).toMatchObject({
    runId: run.runId,
    findings: [
      { kind: 'custody_mismatch', address: alice.address, difference: '-0.5', alert: 'new' },
    ],
    resolved: [],
    open: 2,
  });
  expect(posts[1]!.findings).toHaveLength(1);
});

test('a post the webhook refuses is retried, and what it missed is posted by the next run', async () => {
  answer = 503;
  // The operator books the unseen deposit by hand: early's mismatch is resolved...
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
  // ...and alice's grows.
  await unbackedCustody('0.25');
  const refused = await stack.reconcile();
  expect(refused.findings.map((f) => f.difference)).toEqual(['-0.75']);
  // Two tries (alerts.attempts), both refused: the run says so.
  expect(posts).toHaveLength(4);
  expect(await alertStatus(refused.runId)).toEqual({
    alert_status: 'failed',
    alert_error: 'the webhook answered 503',
  });

  answer = 200;
  const next = await stack.reconcile();
  expect(posts).toHaveLength(5);
  expect(posts[4]).toMatchObject({
    runId: next.runId,
    findings: [
      {
        kind: 'custody_mismatch',
        address: alice.address,
        difference: '-0.75',
        alert: 'changed',
        previous: '-0.5',
      },
    ],
    resolved: [{ kind: 'custody_mismatch', address: early.address, difference: '4.2' }],
    open: 1,
  });
  expect(await alertStatus(next.runId)).toEqual({ alert_status: 'sent', alert_error: null });
  await stack.reconcile();
  expect(posts).toHaveLength(5);
});
