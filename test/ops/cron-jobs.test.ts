import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, expect, test } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import type { Logger } from '../../src/log.js';
import { startCronRole, type CronRole } from '../../src/roles/cron.js';
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
) {
  const config = parseConfig({
    database: { url: raw.url, poolSize: raw.poolSize, connectTimeoutMs: 2000 },
    log: { level: 'silent' },
    cron: raw.cron,
  });
  const runtime = await openRuntime({ config, logger });
  const role = startCronRole(runtime);
  started.push({ runtime, role });
  return runtime;
}

async function turns(runtime: Runtime, job: string, outcome: string): Promise<number> {
  const { values } = await runtime.metrics.cronRuns.get();
  return values.find((v) => v.labels.job === job && v.labels.outcome === outcome)?.value ?? 0;
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
