import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { runLingxi } from '../support/cli.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { admin, startTestService, type TestService } from '../support/service.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * Runs take turns: one that cannot get its turn in time says so instead of waiting for ever, a
 * run whose database goes away with it reports why it failed, and a run left `running` by a
 * process that stopped is marked failed by the next run (and the latest run says why it failed);
 * a run whose turn ends under it stores nothing.
 */

let database: TestDatabase;
let service: TestService;

const runs = async () =>
  (
    await database.pool.query<{ id: string; status: string; error: string | null }>(
      'select id, status, error from reconciliation_runs order by id',
    )
  ).rows;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({
    databaseUrl: database.url,
    config: { reconcile: { lockWaitMs: 300 } },
  });
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

test('a run that cannot get its turn in time is a 409 reconciliation_running, and stores nothing', async () => {
  // Another run holds the turn (a session of its own, as another process would).
  const other = new pg.Client({ connectionString: database.url });
  await other.connect();
  try {
    await other.query(`select pg_advisory_lock(hashtext('lingxi:reconciliation'))`);
    const before = await runs();
    const busy = await admin<{ error: { code: string; message: string } }>(
      service,
      'POST',
      '/reconciliations',
      {},
    );
    expect(busy.status).toBe(409);
    expect(busy.body.error.code).toBe('reconciliation_running');
    expect(busy.body.error.message).toMatch(/in progress/);
    expect(await runs()).toEqual(before);
    await other.query(`select pg_advisory_unlock(hashtext('lingxi:reconciliation'))`);
    // Its turn now: the run goes ahead.
    const done = await admin<{ status: string }>(service, 'POST', '/reconciliations', {});
    expect(done.status).toBe(201);
    expect(done.body.status).toBe('clean');
  } finally {
    await other.end();
  }
  // The service's own connections were not left holding the turn or a short lock_timeout.
  const probe = new pg.Client({ connectionString: database.url });
  await probe.connect();
  try {
    const { rows } = await probe.query<{ ok: boolean }>(
      `select pg_try_advisory_lock(hashtext('lingxi:reconciliation')) as ok`,
    );
    expect(rows[0]!.ok).toBe(true);
  } finally {
    await probe.end();
  }
  const { rows } = await service.runtime.database.pool.query<{ lock_timeout: string }>(
    'show lock_timeout',
  );
  expect(rows[0]!.lock_timeout).toBe('0');
});

test('a run whose database goes away as it fails reports its own error; the next run marks it failed', async () => {
  const target = new URL(database.url);
  let proxy: TcpProxy | undefined;
  let runtime: Runtime | undefined;
  try {
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    const url = new URL(database.url);
    url.host = proxy.address;
    runtime = await devnetRuntime(url.toString());
    const link = proxy;
    // The chain check fails, and the database host goes away at the same moment.
    const adapter = {
      async getHead() {
        link.refuse(true);
        link.cut();
        throw new Error('every RPC endpoint of devnet failed: test');
      },
    } as unknown as ChainAdapter;
    await expect(
      runReconciliation(runtime, { trigger: 'test', adapters: new Map([['devnet', adapter]]) }),
    ).rejects.toThrow('every RPC endpoint of devnet failed: test');
    // Its row could not be updated: it still says running.
    const stuck = (await runs()).at(-1)!;
    expect(stuck.status).toBe('running');
  } finally {
    proxy?.refuse(false);
    await runtime?.close();
    await proxy?.close();
  }
  const stuck = (await runs()).at(-1)!;
  const next = await admin<{ runId: string; status: string }>(
    service,
    'POST',
    '/reconciliations',
    {},
  );
  expect(next.status).toBe(201);
  const after = await runs();
  expect(after.find((r) => r.id === stuck.id)).toEqual({
    id: stuck.id,
    status: 'failed',
    error: 'abandoned: the process running it stopped before it finished',
  });
  expect(after.at(-1)).toMatchObject({ id: next.body.runId, status: 'clean' });
});

/** A runtime of its own (as another process would have) with one network, `devnet`. */
async function devnetRuntime(databaseUrl: string): Promise<Runtime> {
  const config = parseConfig(
    {
      database: { url: databaseUrl, connectTimeoutMs: 1000 },
      log: { level: 'silent' },
      networks: [
        {
          kind: 'evm',
          name: 'devnet',
          chainId: 1337,
          rpcUrls: ['http://127.0.0.1:9'],
          confirmations: 2,
          assets: [{ symbol: 'ETH', native: true, decimals: 18, price: { fixed: '3000' } }],
        },
      ],
    },
    {},
  );
  return openRuntime({ config, logger: createLogger('silent') });
}

/** A chain with nothing of ours on it, that does `during` when the run asks for its head. */
function quietChain(during: () => Promise<void>): Map<string, ChainAdapter> {
  const block = { number: 100n, hash: `0x${'1'.repeat(64)}`, parentHash: `0x${'0'.repeat(64)}` };
  const adapter = {
    assets: [],
    async getHead() {
      await during();
      return { latest: { ...block, timestamp: 0n }, finalized: null };
    },
    async getBlock() {
      return null;
    },
    async getBalance() {
      return 0n;
    },
    async close() {},
  } as unknown as ChainAdapter;
  return new Map([['devnet', adapter]]);
}

/** Ends the database session holding the reconciliation turn (a restart or a cut link would). */
async function endTurnHoldersSession(): Promise<void> {
  const { rows } = await database.pool.query<{ ended: boolean }>(
    `select pg_terminate_backend(pid, 10000) as ended from pg_locks
      where locktype = 'advisory' and granted
        and database = (select oid from pg_database where datname = current_database())
        and objid = hashtext('lingxi:reconciliation')::oid`,
  );
  expect(rows).toEqual([{ ended: true }]);
}

test('lingxi reconcile while another run holds the turn exits 1 with the reason, storing nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lingxi-run-turns-'));
  const configFile = join(dir, 'lingxi.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      database: { url: database.url, poolSize: 2 },
      reconcile: { lockWaitMs: 0 },
      log: { level: 'silent' },
    }),
  );
  const other = new pg.Client({ connectionString: database.url });
  await other.connect();
  try {
    await other.query(`select pg_advisory_lock(hashtext('lingxi:reconciliation'))`);
    const before = await runs();
    const run = await runLingxi(configFile, ['reconcile']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/^lingxi: another reconciliation run is in progress/);
    expect(run.stdout).toBe('');
    expect(await runs()).toEqual(before);
  } finally {
    await other.end();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('while the next run goes, the latest run is the abandoned one, and says why it failed', async () => {
  // A process killed mid-run left its row `running`.
  const { rows } = await database.pool.query<{ id: string }>(
    `insert into reconciliation_runs (trigger, status, blocks, stats)
     values ('cli', 'running', '{}', '{}') returning id`,
  );
  const killed = rows[0]!.id;
  const runtime = await devnetRuntime(database.url);
  let seen: { status: number; body: Record<string, unknown> } | undefined;
  let run: Awaited<ReturnType<typeof runReconciliation>>;
  try {
    run = await runReconciliation(runtime, {
      trigger: 'test',
      adapters: quietChain(async () => {
        seen = await admin(service, 'GET', '/reconciliations/latest');
      }),
    });
  } finally {
    await runtime.close();
  }
  expect(seen?.status).toBe(200);
  expect(seen?.body).toMatchObject({
    runId: killed,
    status: 'failed',
    error: 'abandoned: the process running it stopped before it finished',
  });
  expect(run.error).toBeNull();
  const latest = await admin<Record<string, unknown>>(service, 'GET', '/reconciliations/latest');
  expect(latest.body).toMatchObject({ status: 'findings', error: null });
});

test('a run whose turn ends under it while another run takes over stores nothing and says so', async () => {
  const runtime = await devnetRuntime(database.url);
  let tookOver: { status: number; body: { runId: string; status: string } } | undefined;
  let error: unknown;
  try {
    await runReconciliation(runtime, {
      trigger: 'test',
      adapters: quietChain(async () => {
        await endTurnHoldersSession();
        // Its turn is free: another run (the service's) takes it, marks this one abandoned
        // and completes, while this one goes on.
        tookOver = await admin(service, 'POST', '/reconciliations', {});
      }),
    });
  } catch (caught) {
    error = caught;
  } finally {
    await runtime.close();
  }
  expect(tookOver?.status).toBe(201);
  expect(tookOver?.body.status).toBe('clean');
  const after = await runs();
  const abandoned = after.at(-2)!;
  // What the run that took over found stands: the run it marked abandoned did not overwrite it.
  expect(abandoned).toEqual({
    id: abandoned.id,
    status: 'failed',
    error: 'abandoned: the process running it stopped before it finished',
  });
  expect(after.at(-1)).toMatchObject({ id: tookOver!.body.runId, status: 'clean' });
  const { rows } = await database.pool.query<{ count: string }>(
    'select count(*) from reconciliation_findings where run_id = $1',
    [abandoned.id],
  );
  expect(rows[0]!.count).toBe('0');
  expect(error).toMatchObject({ code: 'reconciliation_turn_lost', status: 503 });
  expect((error as Error).message).toMatch(/lost its turn midway/);
});

test('a run whose turn ends under it with no run taking over is marked failed with the reason', async () => {
  const runtime = await devnetRuntime(database.url);
  let error: unknown;
  try {
    await runReconciliation(runtime, {
      trigger: 'test',
      adapters: quietChain(endTurnHoldersSession),
    });
  } catch (caught) {
    error = caught;
  } finally {
    await runtime.close();
  }
  const last = (await runs()).at(-1)!;
  expect(last.status).toBe('failed');
  expect(last.error).toMatch(/^the run lost its turn midway/);
  expect(error).toMatchObject({ code: 'reconciliation_turn_lost' });
});
