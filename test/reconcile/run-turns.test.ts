import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ChainAdapter } from '../../chain-watchers/adapter.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { runReconciliation } from '../../src/reconcile/runReconciliation.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { admin, startTestService, type TestService } from '../support/service.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * Runs take turns: one that cannot get its turn in time says so instead of waiting for ever, a
 * run whose database goes away with it reports why it failed, and a run left `running` by a
 * process that stopped is marked failed by the next run.
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
    const config = parseConfig(
      {
        database: { url: url.toString(), connectTimeoutMs: 1000 },
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
    runtime = await openRuntime({ config, logger: createLogger('silent') });
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
