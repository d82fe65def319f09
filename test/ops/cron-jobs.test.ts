import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, expect, test, vi } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Logger } from '../../src/log.js';
import {
  nodeCronScheduler,
  startCronRole,
  type CronRole,
  type Scheduler,
} from '../../src/roles/cron.js';
import type { RunRetentionOptions } from '../../src/privacy/retention.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTcpProxy, type TcpProxy } from '../support/tcpProxy.js';

/**
 * The cron role as an operator runs it: jobs that fall due together, a database that goes
 * away and comes back. Each scenario runs a real role (node-cron schedules in the six-field
 * form, so turns come every second or two) against a real PostgreSQL.
 */

const NEVER = '0 0 1 1 *';
let database: TestDatabase;
let proxy: TcpProxy | null = null;
const started: Array<{ runtime: Runtime; role: CronRole }> = [];

beforeAll(async () => {
  database = await createTestDatabase();
});
afterEach(async () => {
  for (const { runtime, role } of started.splice(0)) {
    await role.stop();
    await runtime.close();
  }
  await proxy?.close();
  proxy = null;
});
afterAll(async () => {
  await database?.drop();
});

/** A logger whose JSON lines the test can read. */
function capturedLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

async function startRole(
  raw: { url: string; poolSize: number; cron: Record<string, string> },
  logger: Logger,
  /** The role's scheduler, made on its runtime (default: node-cron's, as the role makes it). */
  scheduler?: (runtime: Runtime) => Scheduler,
  retention?: RunRetentionOptions,
) {
  const config = parseConfig({
    database: { url: raw.url, poolSize: raw.poolSize, connectTimeoutMs: 2000 },
    log: { level: 'silent' },
    cron: raw.cron,
  });
  const runtime = await openRuntime({ config, logger });
  const role = startCronRole(runtime, {
    ...(scheduler ? { scheduler: scheduler(runtime) } : {}),
    ...(retention ? { retention } : {}),
  });
  started.push({ runtime, role });
  return runtime;
}

async function turns(runtime: Runtime, job: string, outcome: string): Promise<number> {
  const { values } = await runtime.metrics.cronRuns.get();
  return values.find((v) => v.labels.job === job && v.labels.outcome === outcome)?.value ?? 0;
}

/**
 * node-cron's schedules, as the role makes them, and how many turns have finished: a turn
 * counts once the role is done with it (its tick's outcome recorded, its lock released), when
 * node-cron no longer takes it for running. The `ok` metric moves before that.
 */
function watchedNodeCron(): {
  scheduler: (runtime: Runtime) => Scheduler;
  finished(): number;
} {
  let finished = 0;
  return {
    scheduler: (runtime) => (job, turn) =>
      nodeCronScheduler(runtime)(job, async (at) => {
        await turn(at);
        finished += 1;
      }),
    finished: () => finished,
  };
}

/** A role's turns, fired by the test as this role's clock would fire them. */
function manualClock(): { scheduler: Scheduler; fire(job: string, at: Date): Promise<void> } {
  const turns = new Map<string, (at: Date) => Promise<void>>();
  return {
    scheduler: (job, turn) => {
      turns.set(job.name, turn);
      return { stop: () => void turns.delete(job.name) };
    },
    fire(job, at) {
      const turn = turns.get(job);
      if (!turn) throw new Error(`the role scheduled no ${job} job`);
      return turn(at);
    },
  };
}

/** A role on the test database whose only job is `job`, its turns fired by the test. */
async function manualRole(
  job: 'reconcile' | 'expireHolds' | 'seal' | 'retention',
  schedule: string,
  retention?: RunRetentionOptions,
) {
  const { logger, lines } = capturedLogger();
  const clock = manualClock();
  const cron = { reconcile: NEVER, expireHolds: NEVER, seal: NEVER, retention: NEVER };
  const runtime = await startRole(
    { url: database.url, poolSize: 3, cron: { ...cron, [job]: schedule } },
    logger,
    () => clock.scheduler,
    retention,
  );
  return { runtime, clock, lines };
}

async function waitFor(what: string, done: () => Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('jobs that fall due together all run on a small connection pool (poolSize 3), none starves for a connection', async () => {
  const { logger, lines } = capturedLogger();
  const every2s = '*/2 * * * * *';
  const runtime = await startRole(
    {
      url: database.url,
      poolSize: 3,
      // Reconciliation, hold expiry and sealing fall due in the same second, as they do
      // every tenth minute with the default schedules.
      cron: { reconcile: every2s, expireHolds: every2s, seal: every2s, retention: NEVER },
    },
    logger,
  );
  const jobs = ['reconcile', 'expire-holds', 'seal'];
  await waitFor('two turns of every job', async () => {
    for (const job of jobs)
      if ((await turns(runtime, job, 'ok')) + (await turns(runtime, job, 'failed')) < 2)
        return false;
    return true;
  });
  const failures = lines.filter((line) => line['msg'] === 'cron job failed');
  expect(failures).toEqual([]);
  for (const job of jobs) expect(await turns(runtime, job, 'failed')).toBe(0);
});

test('a job the database refuses is counted and logged as failed, the process lives on, and the next turn runs once it is back', async () => {
  const { logger, lines } = capturedLogger();
  const target = new URL(database.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const url = new URL(database.url);
  url.host = proxy.address;
  const runtime = await startRole(
    {
      url: url.toString(),
      poolSize: 3,
      cron: { expireHolds: '* * * * * *', reconcile: NEVER, seal: NEVER, retention: NEVER },
    },
    logger,
  );
  await waitFor(
    'a turn that succeeds',
    async () => (await turns(runtime, 'expire-holds', 'ok')) >= 1,
  );

  // The database goes away: every connection is reset and new ones are refused.
  proxy.refuse(true);
  proxy.cut();
  await waitFor('a failed turn', async () => (await turns(runtime, 'expire-holds', 'failed')) >= 1);
  expect(lines).toContainEqual(
    expect.objectContaining({ msg: 'cron job failed', job: 'expire-holds', level: 50 }),
  );

  // It comes back: the next turn runs.
  const okBefore = await turns(runtime, 'expire-holds', 'ok');
  proxy.refuse(false);
  await waitFor(
    'a turn that succeeds again',
    async () => (await turns(runtime, 'expire-holds', 'ok')) > okBefore,
  );
});

test('a failed turn logs the error whole (type, message, stack and its cause), with URLs cut to their host', async () => {
  const { runtime, clock, lines } = await manualRole('expireHolds', '*/5 * * * *');
  // What an operator needs lies in the cause (here an endpoint refusing, whose URL carries
  // a key); the job's own error only says what it was doing.
  const refused = new Error(
    'connect ECONNREFUSED 10.0.0.7:443 (https://rpc.example.com/v2/SECRET-KEY?token=SECRET)',
  );
  vi.spyOn(runtime.ledger, 'expireHolds').mockRejectedValueOnce(
    new TypeError('expiring holds failed', { cause: refused }),
  );
  await clock.fire('expire-holds', new Date('2031-06-01T08:05:00Z'));

  expect(await turns(runtime, 'expire-holds', 'failed')).toBe(1);
  const failure = lines.find((line) => line['msg'] === 'cron job failed');
  expect(failure).toMatchObject({ job: 'expire-holds', level: 50 });
  const err = failure!['err'] as Record<string, unknown>;
  expect(err['type']).toBe('TypeError');
  expect(err['message']).toBe(
    'expiring holds failed: connect ECONNREFUSED 10.0.0.7:443 (https://rpc.example.com)',
  );
  expect(err['stack']).toMatch(/^TypeError: expiring holds failed\n\s+at /);
  expect(err['stack']).toContain('caused by: Error: connect ECONNREFUSED 10.0.0.7:443');
  expect(JSON.stringify(failure)).not.toContain('SECRET');
});

test('two cron processes whose clocks differ by more than a job takes run each scheduled tick once', async () => {
  const { logger } = capturedLogger();
  const schedules = {
    reconcile: '*/10 * * * *',
    expireHolds: NEVER,
    seal: NEVER,
    retention: NEVER,
  };
  const ahead = manualClock();
  const behind = manualClock();
  const first = await startRole(
    { url: database.url, poolSize: 3, cron: schedules },
    logger,
    () => ahead.scheduler,
  );
  const second = await startRole(
    { url: database.url, poolSize: 3, cron: schedules },
    logger,
    () => behind.scheduler,
  );
  const cronRuns = async () =>
    (
      await database.pool.query<{ n: number }>(
        `select count(*)::int as n from reconciliation_runs where trigger = 'cron'`,
      )
    ).rows[0]!.n;
  const before = await cronRuns();
  const tick = new Date('2031-05-01T12:20:00Z');
  const minutes = (n: number) => new Date(tick.getTime() + n * 60_000);

  // The process whose clock is ahead runs the 12:20 reconciliation, and it finishes; then
  // the one 40 s behind reaches 12:20 (its timer a little late) and finds the lock free.
  await ahead.fire('reconcile', tick);
  expect(await cronRuns()).toBe(before + 1);
  await behind.fire('reconcile', new Date(tick.getTime() + 250));
  expect(await cronRuns()).toBe(before + 1);
  expect(await turns(second, 'reconcile', 'skipped')).toBe(1);
  expect(await turns(second, 'reconcile', 'ok')).toBe(0);

  // Whichever process comes first runs a tick: here the late one, at 12:30.
  await behind.fire('reconcile', minutes(10));
  await ahead.fire('reconcile', minutes(10));
  expect(await cronRuns()).toBe(before + 2);
  expect(await turns(first, 'reconcile', 'ok')).toBe(1);
  expect(await turns(second, 'reconcile', 'ok')).toBe(1);

  const ticks = async () =>
    (
      await database.pool.query<{ tick: Date; outcome: string }>(
        `select tick, outcome from cron_ticks where job = 'reconcile' order by tick`,
      )
    ).rows.map((row) => `${row.tick.toISOString()} ${row.outcome}`);
  expect(await ticks()).toEqual(['2031-05-01T12:20:00.000Z ok', '2031-05-01T12:30:00.000Z ok']);
  // Records a day older than the tick being run are pruned.
  await ahead.fire('reconcile', minutes(24 * 60 + 20));
  expect(await cronRuns()).toBe(before + 3);
  expect(await ticks()).toEqual(['2031-05-02T12:40:00.000Z ok']);
});

test('a turn whose timer fires seconds late (the event loop was busy) still runs, for its own tick', async () => {
  const { logger } = capturedLogger();
  const cron = watchedNodeCron();
  await startRole(
    {
      url: database.url,
      poolSize: 3,
      cron: { reconcile: '*/10 * * * * *', expireHolds: NEVER, seal: NEVER, retention: NEVER },
    },
    logger,
    cron.scheduler,
  );
  // Between two turns: the last one has just finished, all of it. (Its `ok` is counted before
  // its tick's outcome is written and its lock released: an event loop blocked from then on
  // leaves that turn running at the next tick, which node-cron then drops as an overlap.)
  await waitFor('a turn', async () => cron.finished() >= 1);
  const finishedBefore = cron.finished();
  await waitFor('the next turn', async () => cron.finished() > finishedBefore);
  const tick = Math.ceil(Date.now() / 10_000) * 10_000;
  // The event loop is kept busy (a heavy computation in this process) past the next tick, so
  // its timer fires 2.5 s late, well before the tick after it (10 s later: a loaded machine
  // may add seconds more). This blocks; it does not wait for anything to happen.
  while (Date.now() < tick + 2500);
  // The turn claims its own tick (cron_ticks), not the next one: it ran for that tick, late,
  // rather than being dropped. (Compared by tick, not by wall time: a loaded machine may start
  // the run itself late too.)
  const claimed = async () =>
    (
      await database.pool.query<{ tick: Date; outcome: string }>(
        `select tick, outcome from cron_ticks where job = 'reconcile' and tick >= $1 order by tick`,
        [new Date(tick)],
      )
    ).rows.map((row) => ({ tick: row.tick.getTime(), outcome: row.outcome }));
  await waitFor(
    'the late tick claimed and run',
    async () => (await claimed()).some((row) => row.tick === tick && row.outcome === 'ok'),
    30_000,
  ).catch(() => {}); // the assertion below says what was claimed instead
  expect((await claimed())[0]).toEqual({ tick, outcome: 'ok' });
}, 90_000);

test('a tick dropped because a later one was due by then is counted and logged as missed', async () => {
  const { logger, lines } = capturedLogger();
  const runtime = await startRole(
    {
      url: database.url,
      poolSize: 3,
      cron: { expireHolds: '* * * * * *', reconcile: NEVER, seal: NEVER, retention: NEVER },
    },
    logger,
  );
  await waitFor('a turn', async () => (await turns(runtime, 'expire-holds', 'ok')) >= 1);
  // The event loop is kept busy for 3.5 s: the every-second job's timer fires when two later
  // ticks are due already. This blocks; it does not wait for anything to happen.
  const until = Date.now() + 3500;
  while (Date.now() < until);
  await waitFor('a missed tick', async () => (await turns(runtime, 'expire-holds', 'missed')) >= 1);
  expect(lines).toContainEqual(
    expect.objectContaining({
      msg: expect.stringMatching(/^cron tick missed/),
      job: 'expire-holds',
      level: 40,
    }),
  );
});

test('a retention turn on a cron process whose clock runs 100 days ahead (wrong at boot, before NTP) scrubs and rolls up nothing before its time', async () => {
  const { runtime, clock } = await manualRole('retention', '17 3 * * *');
  // A call that finished 10 days ago by the database's clock: its IP and user agent are kept
  // 30 days (retention.requestMetaDays), its row 90 (retention.usageLogDays).
  const { rows: users } = await database.pool.query<{ id: string }>(
    `insert into users (telegram_id) values (7301) returning id::text`,
  );
  await database.pool.query(
    `insert into usage_records (request_id, user_id, endpoint, model, started_at, finished_at,
                                latency_ms, http_status, outcome, client_ip, user_agent)
     values ('req_ten_days_ago', $1, 'chat.completions', 'gpt-4o-mini', now() - interval '10 days',
             now() - interval '10 days', 10, 200, 'ok', '10.0.0.1', 'curl/8')`,
    [users[0]!.id],
  );
  // This process's clock reads 100 days ahead of the database's (and the world's).
  const ahead = new Date(Date.now() + 100 * 86_400_000);
  vi.useFakeTimers({ toFake: ['Date'], now: ahead });
  try {
    await clock.fire('retention', ahead);
  } finally {
    vi.useRealTimers();
  }
  expect(await turns(runtime, 'retention', 'ok')).toBe(1);
  const { rows } = await database.pool.query(
    `select client_ip, user_agent from usage_records where request_id = 'req_ten_days_ago'`,
  );
  expect(rows).toEqual([{ client_ip: '10.0.0.1', user_agent: 'curl/8' }]);
  const { rows: daily } = await database.pool.query(
    `select 1 from usage_daily where user_id = $1`,
    [users[0]!.id],
  );
  expect(daily).toEqual([]);
});

test('a retention run stopped at its per-run bound says so: a warning and lingxi_retention_incomplete, until a run finishes', async () => {
  const { runtime, clock, lines } = await manualRole('retention', '17 3 * * *', {
    batchSize: 1,
    maxBatches: 2,
  });
  // Three calls past their 90 days (scrubbed, then rolled up and deleted): one row a
  // statement, two statements a step and run.
  const { rows: users } = await database.pool.query<{ id: string }>(
    `insert into users (telegram_id) values (7302) returning id::text`,
  );
  await database.pool.query(
    `insert into usage_records (request_id, user_id, endpoint, model, started_at, finished_at,
                                latency_ms, http_status, outcome, client_ip, user_agent)
     select 'req_old_' || g, $1, 'chat.completions', 'gpt-4o-mini', now() - interval '100 days',
            now() - interval '100 days', 10, 200, 'ok', '10.0.0.1', 'curl/8'
       from generate_series(1, 3) g`,
    [users[0]!.id],
  );
  const incomplete = async () => (await runtime.metrics.retentionIncomplete.get()).values[0]?.value;
  // What /metrics serves: the counter alerts sum over every cron process, there from the start.
  const exposition = () => runtime.metrics.registry.metrics();
  expect(await exposition()).toContain(
    'lingxi_retention_runs_stopped_total{table="usage_records",step="scrub"} 0',
  );
  const stopped = () => lines.filter((l) => String(l['msg']).startsWith('retention purge stopped'));
  await clock.fire('retention', new Date());
  expect(await incomplete()).toBe(1);
  expect(stopped()).toHaveLength(1);
  expect(stopped()[0]).toMatchObject({
    level: 40,
    job: 'retention',
    // The table and the counts: two rows a step, the most a run may (1 row x 2 statements).
    table: 'usage_records',
    stopped: [
      { table: 'usage_records', step: 'scrub', rows: 2, bound: 2 },
      { table: 'usage_records', step: 'roll-up', rows: 2, bound: 2 },
    ],
    result: { complete: false, scrubbedRows: 2, rolledUpRows: 2 },
  });
  expect(stopped()[0]!['msg']).toContain(
    '(usage_records scrub: 2 rows, at most 2 a run; usage_records roll-up: 2 rows, at most 2 a run)',
  );
  for (const step of ['scrub', 'roll-up'])
    expect(await exposition()).toContain(
      `lingxi_retention_runs_stopped_total{table="usage_records",step="${step}"} 1`,
    );
  // The next day's turn (each tick runs once) finishes the work.
  await clock.fire('retention', new Date(Date.now() + 86_400_000));
  expect(await incomplete()).toBe(0);
  expect(stopped()).toHaveLength(1);
  expect(await exposition()).toContain(
    'lingxi_retention_runs_stopped_total{table="usage_records",step="roll-up"} 1',
  );
  const { rows } = await database.pool.query(
    `select count(*)::int as n from usage_records where user_id = $1`,
    [users[0]!.id],
  );
  expect(rows[0].n).toBe(0);
});

test('a turn whose lock connection died silently since the last turn (a failover behind a virtual IP) runs on a new one', async () => {
  const { logger, lines } = capturedLogger();
  const target = new URL(database.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  const url = new URL(database.url);
  url.host = proxy.address;
  const clock = manualClock();
  const runtime = await startRole(
    {
      url: url.toString(),
      poolSize: 3,
      cron: { retention: '17 3 * * *', reconcile: NEVER, expireHolds: NEVER, seal: NEVER },
    },
    logger,
    () => clock.scheduler,
  );
  await clock.fire('retention', new Date('2031-06-01T03:17:00Z'));
  expect(await turns(runtime, 'retention', 'ok')).toBe(1);
  // The pool's idle connections close after 10 s; the lock connection stays open for the
  // next turn, a day later.
  await waitFor('the pool to close its idle connections', async () =>
    Promise.resolve(runtime.database.pool.totalCount === 0),
  );
  // The database moves behind the same address: the connections open now get no answer and
  // hear nothing (no reset); new ones reach the new server.
  proxy.blackhole(true, { openOnly: true });
  await clock.fire('retention', new Date('2031-06-02T03:17:00Z'));
  expect(lines.filter((line) => line['msg'] === 'cron job failed')).toEqual([]);
  expect(await turns(runtime, 'retention', 'ok')).toBe(2);
}, 60_000);
