import { createServer, type Server } from 'node:http';
import type { Address } from 'viem';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { createAdapters } from '../../chain-watchers/pipeline/createWatcher.js';
import { createLogger } from '../../src/log.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import type { Runtime } from '../../src/runtime.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';
import { startEvmStack, type EvmStack } from '../support/evm/stack.js';

/**
 * The alert webhook is told when an error finding appears, changes or is resolved, not again on
 * every run that still has it; a post that fails is retried within the run and, still failing,
 * posted again by the next run. A run that could not check (the RPC down on every endpoint) is
 * alerted the same way: once while it fails with the same cause, and as recovered after.
 */

interface Alert {
  event: string;
  runId: string;
  failure?: {
    fingerprint: string;
    network?: string;
    error: string;
    alert: string;
    previous?: string;
    since: string;
  };
  recovered: Array<{ network?: string; error: string; since: string }>;
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
/** A JSON-RPC endpoint of the devnet's network that is down (503) or on another chain. */
let rpc: Server;
let rpcAnswer: 'down' | 'wrong-chain' = 'down';
let unreachable: Map<string, ChainAdapter>;
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
  rpc = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (rpcAnswer === 'down') {
        res.statusCode = 503;
        res.end('down for maintenance');
        return;
      }
      // Answers every call (batched or not) with chain id 1, not the devnet's 1337.
      const calls = JSON.parse(body) as { id: number } | Array<{ id: number }>;
      const answer = (call: { id: number }) => ({ jsonrpc: '2.0', id: call.id, result: '0x1' });
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(Array.isArray(calls) ? calls.map(answer) : answer(calls)));
    });
  });
  await new Promise<void>((resolve) => rpc.listen(0, '127.0.0.1', resolve));
  const rpcUrl = `http://127.0.0.1:${(rpc.address() as { port: number }).port}`;
  unreachable = createAdapters(
    runtime.config.networks.map((n) => ({ ...n, rpcUrls: [rpcUrl] })),
    createLogger('silent'),
  );
});
afterAll(async () => {
  for (const adapter of unreachable?.values() ?? []) await adapter.close();
  rpc?.close();
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

test('a run that fails is alerted once while it fails the same way, again when the cause changes, and as recovered', async () => {
  const failing = () => runReconciliation(runtime, { trigger: 'test', adapters: unreachable });
  const latestRun = async () =>
    (
      await stack.database.pool.query<{ id: string; status: string; error: string }>(
        `select id::text as id, status, error from reconciliation_runs r order by r.id desc limit 1`,
      )
    ).rows[0]!;

  await expect(failing()).rejects.toThrow(/devnet: .* failed on every endpoint/);
  const failed = await latestRun();
  expect(failed.status).toBe('failed');
  expect(posts).toHaveLength(6);
  expect(posts[5]).toEqual({
    source: 'lingxi-ledger',
    event: 'reconciliation.failed',
    runId: failed.id,
    failure: {
      fingerprint: expect.stringMatching(/^[0-9a-f]{16}$/),
      network: 'devnet',
      error: failed.error,
      alert: 'new',
      since: expect.any(String),
    },
    recovered: [],
    // It could not check: alice's mismatch, still open as far as anyone knows, is not resolved.
    findings: [],
    resolved: [],
    open: 1,
  });
  expect(await alertStatus(failed.id)).toEqual({ alert_status: 'sent', alert_error: null });

  // Failing again, the same way: nothing new to say.
  await expect(failing()).rejects.toThrow(/failed on every endpoint/);
  const again = await latestRun();
  expect(again.error).toBe(failed.error);
  expect(posts).toHaveLength(6);
  expect(await alertStatus(again.id)).toEqual({ alert_status: 'unchanged', alert_error: null });

  // Another cause: the endpoint now serves another chain.
  rpcAnswer = 'wrong-chain';
  await expect(failing()).rejects.toThrow(/no RPC endpoint serves chain id 1337/);
  const changed = await latestRun();
  expect(changed.error).not.toBe(failed.error);
  expect(posts).toHaveLength(7);
  expect(posts[6]).toMatchObject({
    event: 'reconciliation.failed',
    runId: changed.id,
    failure: {
      network: 'devnet',
      error: changed.error,
      alert: 'changed',
      previous: failed.error,
      since: posts[5]!.failure!.since,
    },
    findings: [],
    resolved: [],
    open: 1,
  });

  // The RPC is back: one "recovered" alert; alice's mismatch, unchanged, is not repeated.
  const back = await stack.reconcile();
  expect(back.findings.map((f) => [f.kind, f.difference])).toEqual([['custody_mismatch', '-0.75']]);
  expect(posts).toHaveLength(8);
  expect(posts[7]).toEqual({
    source: 'lingxi-ledger',
    event: 'reconciliation.recovered',
    runId: back.runId,
    recovered: [
      {
        fingerprint: posts[5]!.failure!.fingerprint,
        network: 'devnet',
        error: changed.error,
        since: posts[5]!.failure!.since,
      },
    ],
    findings: [],
    resolved: [],
    open: 1,
  });
  await stack.reconcile();
  expect(posts).toHaveLength(8);
});

test('a failure whose message changes only by a block number is alerted once', async () => {
  // An endpoint that keeps no old state (not an archive node) cannot answer a balance at the
  // block the run compares at, and says which block: another one every run.
  const real = stack.adapters.get('devnet')!;
  const pruned: ChainAdapter = {
    network: real.network,
    kind: real.kind,
    assets: real.assets,
    verify: () => real.verify(),
    getHead: () => real.getHead(),
    getBlock: (number) => real.getBlock(number),
    scan: (params) => real.scan(params),
    getBalance: (_address, _asset, blockNumber) =>
      Promise.reject(
        new Error(
          `devnet: missing trie node for state at block ${blockNumber} (https://eth.example.org/v3/SECRETKEY)`,
        ),
      ),
    normalizeAddress: (address) => real.normalizeAddress(address),
    close: async () => {},
  };
  const failing = () =>
    runReconciliation(runtime, { trigger: 'test', adapters: new Map([['devnet', pruned]]) });
  const latestError = async () =>
    (
      await stack.database.pool.query<{ id: string; error: string }>(
        `select r.id::text as id, r.error from reconciliation_runs r order by r.id desc limit 1`,
      )
    ).rows[0]!;

  await expect(failing()).rejects.toThrow(/missing trie node/);
  const first = await latestError();
  expect(posts).toHaveLength(9);
  expect(posts[8]).toMatchObject({
    event: 'reconciliation.failed',
    failure: { network: 'devnet', error: first.error, alert: 'new' },
  });
  // The endpoint's key is neither stored nor posted: its URL is cut to the host.
  expect(first.error).toMatch(/^devnet: missing trie node .*\(https:\/\/eth\.example\.org\)$/);
  expect(JSON.stringify(posts[8])).not.toContain('SECRETKEY');

  await devnet.mine(2);
  await stack.poll();
  await expect(failing()).rejects.toThrow(/missing trie node/);
  const second = await latestError();
  // Another block, the same cause: nothing to say.
  expect(second.error).not.toBe(first.error);
  expect(posts).toHaveLength(9);
  expect(await alertStatus(second.id)).toEqual({ alert_status: 'unchanged', alert_error: null });

  // Recovered: the message the webhook was told about.
  await stack.reconcile();
  expect(posts).toHaveLength(10);
  expect(posts[9]).toMatchObject({
    event: 'reconciliation.recovered',
    recovered: [{ network: 'devnet', error: first.error, since: posts[8]!.failure!.since }],
    findings: [],
    resolved: [],
  });
});

test('a run limited to some networks leaves the findings of the others open, unsaid', async () => {
  // A second network on the same chain whose watcher never ran: early's 5.2 USDT is not in its
  // books, an error finding of "mirror" only.
  runtime.config.networks.push({ ...runtime.config.networks[0]!, name: 'mirror' });
  const mirror = createAdapters([runtime.config.networks[1]!], createLogger('silent'));
  const adapters = new Map([...stack.adapters, ...mirror]);
  const run = (networks?: string[]) =>
    runReconciliation(runtime, { trigger: 'test', adapters, ...(networks ? { networks } : {}) });
  try {
    const full = await run();
    const errors = (r: typeof full) =>
      r.findings
        .filter((f) => f.severity === 'error')
        .map((f) => [f.network, f.kind, f.address, f.difference]);
    expect(errors(full)).toEqual([
      ['devnet', 'custody_mismatch', alice.address, '-0.75'],
      ['mirror', 'custody_mismatch', early.address, '5.2'],
    ]);
    expect(posts).toHaveLength(11);
    expect(posts[10]).toMatchObject({
      findings: [{ kind: 'custody_mismatch', address: early.address, alert: 'new' }],
      resolved: [],
      open: 2,
    });

    // `--network devnet`: mirror was not checked, its finding is not resolved...
    const devnetOnly = await run(['devnet']);
    expect(errors(devnetOnly)).toEqual([['devnet', 'custody_mismatch', alice.address, '-0.75']]);
    expect(posts).toHaveLength(11);
    expect(await alertStatus(devnetOnly.runId)).toEqual({
      alert_status: 'unchanged',
      alert_error: null,
    });
    // ...so the next full run has nothing new to say about it.
    await run();
    expect(posts).toHaveLength(11);

    // Mirror put right, `--network mirror`: its finding is resolved, devnet's left as it is.
    await runtime.ledger.postEntry({
      kind: 'adjustment',
      metadata: { reason: 'test: early booked on mirror' },
      postings: [
        { account: `assets:custody:mirror:USDT:${early.address}`, amount: '5.2', currency: 'USDT' },
        { account: 'equity:trading:USDT', amount: '-5.2' },
      ],
    });
    await run(['mirror']);
    expect(posts).toHaveLength(12);
    expect(posts[11]).toMatchObject({
      findings: [],
      resolved: [{ kind: 'custody_mismatch', network: 'mirror', address: early.address }],
      open: 1,
    });
    await run();
    expect(posts).toHaveLength(12);
  } finally {
    runtime.config.networks.pop();
    for (const adapter of mirror.values()) await adapter.close();
  }
});
