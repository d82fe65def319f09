import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { connect } from '../../src/db/connect.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { fund, openLedger } from '../support/ledger.js';
import { counter, waitFor } from '../support/poll.js';
import { admin, startTestService, userWithKey, type TestService } from '../support/service.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * The link to the database dies without a reset (a partition, a failover behind a virtual IP):
 * a request's read on a pooled connection gets no answer and no error, and the kernel's
 * keepalive would only close the connection after about 11 minutes. `database.queryTimeoutMs`
 * (500 ms here) bounds it: the request answers the documented 503, the connection is closed
 * and not handed out again, and once the link is back the next request is served. Long jobs
 * (here a reconciliation run waiting for its turn) are not cut by it. The service reaches
 * PostgreSQL through a TCP proxy the test blackholes.
 */

const QUERY_TIMEOUT_MS = 500;

let database: TestDatabase;
let proxy: TcpProxy;
let service: TestService;

beforeAll(async () => {
  database = await createTestDatabase();
  const url = new URL(database.url);
  proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port || 5432) });
  url.host = proxy.address;
  service = await startTestService({
    databaseUrl: url.toString(),
    config: {
      database: {
        url: url.toString(),
        queryTimeoutMs: QUERY_TIMEOUT_MS,
        // Waiting for a new connection is bounded on its own; not what is tested here.
        connectTimeoutMs: 30_000,
      },
      reconcile: { lockWaitMs: 60_000 },
    },
  });
});
afterAll(async () => {
  proxy?.blackhole(false);
  await service?.stop();
  await proxy?.close();
  await database?.drop();
});

const count = (sql: string, params: unknown[] = []) => counter(database.pool)(sql, params);

async function get(path: string, headers: Record<string, string>) {
  const response = await fetch(`${service.url}${path}`, { headers });
  return {
    status: response.status,
    retryAfter: response.headers.get('retry-after'),
    body: (await response.json()) as { error?: { code: string; type: string } },
  };
}
const adminHeaders = { authorization: 'Bearer test-admin-token-0123456789' };

test('a read whose link dies without a reset answers 503 within the bound; the connection is discarded; once the link is back the next request is served', async () => {
  const { userId } = await userWithKey(service, { telegramId: 880_001, balance: '12.5' });
  // A key never used: authenticating it reads it from the database (no cached answer).
  const { apiKey } = await userWithKey(service, { telegramId: 880_002 });
  const pool = service.runtime.database.pool;
  expect((await get(`/admin/users/${userId}/balance`, adminHeaders)).status).toBe(200);
  // Every connection of the pool open, idle between queries, over the link that will die.
  await Promise.all([1, 2, 3, 4].map(() => pool.query('select pg_sleep(0.05)')));
  await waitFor('the pool to be idle', async () => pool.idleCount === pool.totalCount);
  const open = pool.totalCount;
  expect(open).toBeGreaterThanOrEqual(4);

  proxy.blackhole(true);
  const unavailable = {
    status: 503,
    retryAfter: '1',
    body: { error: expect.objectContaining({ code: 'service_unavailable', type: 'api_error' }) },
  };
  // A balance read (the user's row, then the ledger's balance).
  expect(await get(`/admin/users/${userId}/balance`, adminHeaders)).toEqual(unavailable);
  // An API key's authentication.
  expect(await get('/v1/models', { authorization: `Bearer ${apiKey}` })).toEqual(unavailable);
  // Any other query on the pool too, with the error saying why.
  await expect(pool.query('select 1')).rejects.toMatchObject({
    code: 'ETIMEDOUT',
    message: `the database did not answer within ${QUERY_TIMEOUT_MS} ms (database.queryTimeoutMs): the connection was closed`,
  });
  // Each stalled connection was closed and left the pool, instead of going back to it.
  expect(pool.totalCount).toBe(open - 3);

  proxy.blackhole(false);
  const balance = await get(`/admin/users/${userId}/balance`, adminHeaders);
  expect(balance.status).toBe(200);
  expect(JSON.stringify(balance.body)).toContain('12.5');
  expect((await get('/v1/models', { authorization: `Bearer ${apiKey}` })).status).toBe(200);
});

test('a long job is not cut by the bound: a reconciliation run waits for its turn longer than it, then runs', async () => {
  // Another run holds the turn (a session of its own, as another process would).
  const other = new pg.Client({ connectionString: database.url });
  await other.connect();
  try {
    await other.query(`select pg_advisory_lock(hashtext('lingxi:reconciliation'))`);
    const run = admin<{ status: string }>(service, 'POST', '/reconciliations', {});
    // The run's session has waited for the turn for twice the bound (the database's clock).
    await waitFor(
      'the run to wait for its turn past the bound',
      async () =>
        (await count(
          `select count(*) from pg_stat_activity
          where datname = current_database() and wait_event = 'advisory'
            and clock_timestamp() - query_start > $1::int * interval '1 ms'`,
          [2 * QUERY_TIMEOUT_MS],
        )) === 1,
    );
    await other.query(`select pg_advisory_unlock(hashtext('lingxi:reconciliation'))`);
    const done = await run;
    expect(done.status).toBe(201);
    expect(done.body.status).toBe('clean');
  } finally {
    await other.end();
  }
});

test("a reconciliation's whole-book checks are not cut by the bound: they wait on the postings longer than it, then pass", async () => {
  // Another transaction holds the postings table (as a long maintenance job would): every
  // check that reads the whole book waits behind it.
  const other = new pg.Client({ connectionString: database.url });
  await other.connect();
  try {
    await other.query('begin');
    await other.query('lock table ledger_postings in access exclusive mode');
    const run = admin<{ status: string }>(service, 'POST', '/reconciliations', {});
    await waitFor(
      "the run's checks to wait on the postings past the bound",
      async () =>
        (await count(
          `select count(*) from pg_stat_activity
            where datname = current_database() and wait_event_type = 'Lock'
              and query like '%ledger_postings%'
              and clock_timestamp() - query_start > $1::int * interval '1 ms'`,
          [2 * QUERY_TIMEOUT_MS],
        )) >= 2,
    );
    await other.query('commit');
    const done = await run;
    expect(done.status).toBe(201);
    expect(done.body.status).toBe('clean');
  } finally {
    await other.end();
  }
});

test("the ledger's writes have the ledger's own bound, not this one: one waiting on a row lock longer than it commits", async () => {
  // The service's pool, as `database.*` makes it; the ledger's write bound is its default.
  const handle = connect(database.url, 4, { queryTimeoutMs: QUERY_TIMEOUT_MS });
  const blocker = await database.pool.connect();
  try {
    const ledger = await openLedger(handle.pool);
    await fund(ledger, 'lw-a', '3');
    await blocker.query('begin');
    await blocker.query(`select 1 from ledger_accounts where code = $1 for update`, [
      'liabilities:customers:lw-a',
    ]);
    const write = fund(ledger, 'lw-a', '2');
    await waitFor(
      'the write to wait for the row lock past the bound',
      async () =>
        (await count(
          `select count(*) from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'
            and clock_timestamp() - query_start > $1::int * interval '1 ms'`,
          [2 * QUERY_TIMEOUT_MS],
        )) === 1,
    );
    await blocker.query('commit');
    await write;
    // Its batch ran once, uncut: none was given up and fenced (as one cut by this bound is).
    expect(await count('select count(*) from ledger_batch_fences where abandoned')).toBe(0);
    expect((await ledger.getBalance('liabilities:customers:lw-a')).available.toString()).toBe('5');
    await ledger.close();
  } finally {
    await blocker.query('rollback').catch(() => {});
    blocker.release();
    await handle.close();
  }
});
