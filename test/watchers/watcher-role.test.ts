import { afterAll, beforeAll, expect, test } from 'vitest';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import {
  ChainDivergedError,
  type IterationReport,
} from '../../chain-watchers/pipeline/depositWatcher.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { startWatcherRole, type WatcherRole } from '../../src/roles/watch.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startDevnet, type Devnet } from '../support/evm/devnet.js';

/**
 * The watcher role as `lingxi watch` starts it (its runtime, its metrics): what it reports of a
 * network, read from the process's metrics registry.
 */

let devnet: Devnet;
let database: TestDatabase;
let runtime: Runtime;
let role: WatcherRole | null = null;

/** What the role reported of an iteration; `next` waits for one that matches. */
type Outcome = { report: IterationReport } | { error: unknown };
const waiters: Array<{
  match: (outcome: Outcome) => boolean;
  resolve: (outcome: Outcome) => void;
}> = [];
function observe(outcome: Outcome): void {
  for (const waiter of [...waiters]) {
    if (!waiter.match(outcome)) continue;
    waiters.splice(waiters.indexOf(waiter), 1);
    waiter.resolve(outcome);
  }
}
/** The first outcome from now on that `match` picks. */
function next(match: (outcome: Outcome) => boolean): Promise<Outcome> {
  return new Promise((resolve) => waiters.push({ match, resolve }));
}

async function divergedGauge(): Promise<
  Array<{ network: string | number | undefined; value: number }>
> {
  const metric = await runtime.metrics.watcherChainDiverged.get();
  return metric.values.map(({ labels, value }) => ({ network: labels.network, value }));
}

beforeAll(async () => {
  [devnet, database] = await Promise.all([startDevnet({ accounts: 1 }), createTestDatabase()]);
  const config = parseConfig(
    {
      database: { url: database.url, poolSize: 4 },
      log: { level: 'silent' },
      wallets: mnemonicToAccountXpubs(
        'test test test test test test test test test test test junk',
      ),
      networks: [
        {
          kind: 'evm',
          name: 'devnet',
          chainId: 1337,
          rpcUrls: [devnet.url],
          confirmations: 2,
          pollIntervalMs: 20,
          rpcTimeoutMs: 2000,
          rpcRetries: 0,
          // Checkpoints reach 4 x 2 = 8 blocks behind the cursor.
          reorgDepthMax: 2,
          assets: [{ symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } }],
        },
      ],
    },
    {},
  );
  runtime = await openRuntime({ config, logger: createLogger('silent') });
});

afterAll(async () => {
  await role?.stop();
  await runtime?.close();
  await database?.drop();
  await devnet?.close();
});

test('lingxi_watcher_chain_diverged{network}: 1 while no checkpoint the watcher kept is on the chain, 0 once an iteration succeeds again (an operator added a checkpoint below the fork)', async () => {
  await devnet.mine(3);
  const forkBase = await devnet.blockNumber();
  const beforeFork = await devnet.snapshot();
  const followed = await devnet.mine(12);

  const caughtUp = next((o) => 'report' in o && o.report.caughtUp && o.report.head >= followed);
  role = await startWatcherRole(runtime, ['devnet'], {
    onIteration: (_, report) => observe({ report }),
    onFailure: (_, error) => observe({ error }),
  });
  await caughtUp;
  expect(await divergedGauge()).toEqual([{ network: 'devnet', value: 0 }]);
  // Every checkpoint it keeps is above the fork: the first start keeps the head's parent.
  const { rows: kept } = await database.pool.query<{ lowest: string }>(
    `select min(block_number)::text as lowest from watcher_checkpoints where network = 'devnet'`,
  );
  expect(BigInt(kept[0]!.lowest)).toBeGreaterThan(forkBase);

  // Another branch from the fork, longer than the one followed: nothing kept is on it.
  const diverged = next((o) => 'error' in o && o.error instanceof ChainDivergedError);
  await devnet.revert(beforeFork);
  await devnet.mine(20, { increaseTimeS: 13 });
  await diverged;
  expect(await divergedGauge()).toEqual([{ network: 'devnet', value: 1 }]);

  // The way out (docs/operating.md): a checkpoint below the fork, its hash read from the chain.
  const recovered = next((o) => 'report' in o);
  const base = await devnet.client.getBlock({ blockNumber: forkBase });
  await database.pool.query(
    `insert into watcher_checkpoints (network, block_number, block_hash) values ('devnet', $1, $2)`,
    [String(forkBase), base.hash],
  );
  const first = await recovered;
  expect(await divergedGauge()).toEqual([{ network: 'devnet', value: 0 }]);
  expect('report' in first && first.report.forkPoint).toBe(forkBase);
});
