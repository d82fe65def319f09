import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { Database } from '../../src/db/schema.js';
import { AppError } from '../../src/errors.js';
import { Meter, releaseExpiredReservations } from '../../src/gateway/meter.js';
import type { ApiCaller } from '../../src/keys/keyAuthenticator.js';
import { callRecord } from '../support/book.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { waitFor } from '../support/poll.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';

/**
 * A key's spend limit is reserved per call and released when the call settles: exactly what
 * the limit allows under concurrency, a release repeated after a database blip counts once,
 * and a call whose process died never keeps part of the limit.
 */

let database: TestDatabase;
let service: TestService;
let meter: Meter;

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({ databaseUrl: database.url });
  meter = service.http.services.meter;
});
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

async function limitedKey(telegramId: number, spendLimitUsd: string): Promise<ApiCaller> {
  const { userId, keyId } = await userWithKey(service, {
    telegramId,
    balance: '100',
    key: { spendLimitUsd },
  });
  return { keyId, userId, allowedModels: null, spendLimitUsd };
}

const hold = (caller: ApiCaller, maxCost: string, expiresInMs = 600_000) =>
  meter.hold({
    caller,
    requestId: `req_${Math.random().toString(36).slice(2)}`,
    model: 'gpt-4o-mini',
    maxCost: new Decimal(maxCost),
    holdMs: expiresInMs,
  });

async function keyTotals(keyId: string) {
  const { rows } = await database.pool.query<{ spent: string; reserved: string; open: number }>(
    `select trim_scale(spent_usd)::text as spent, trim_scale(reserved_usd)::text as reserved,
            (select count(*)::int from api_key_reservations r where r.key_id = k.id and r.released_at is null) as open
       from api_keys k where id = $1`,
    [keyId],
  );
  return rows[0]!;
}

test('20 concurrent calls of 0.2 against a limit of 1: exactly 5 are reserved, the rest get 402', async () => {
  const caller = await limitedKey(5001, '1');
  const settled = await Promise.allSettled(Array.from({ length: 20 }, () => hold(caller, '0.2')));
  const refused = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as AppError] : []));
  expect(settled.length - refused.length).toBe(5);
  expect(new Set(refused.map((e) => `${e.status} ${e.code}`))).toEqual(
    new Set(['402 spend_limit_exceeded']),
  );
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0', reserved: '1', open: 5 });
});

test('a settlement repeated after a database blip counts once against the limit', async () => {
  const caller = await limitedKey(5002, '1');
  const held = await hold(caller, '0.5');
  await meter.settle(held, new Decimal('0.3'), callRecord(caller, 'req_spend_limit', 'ok', 200));
  // The same settlement again, as a retry after a lost answer would send it.
  await meter.settle(held, new Decimal('0.3'), callRecord(caller, 'req_spend_limit', 'ok', 200));
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0.3', reserved: '0', open: 0 });
  const { rows } = await database.pool.query(
    `select count(*)::int as n from usage_records where hold_id = $1`,
    [held.holdId],
  );
  expect(rows[0].n).toBe(1);
});

test('a call that never settled (its process died) gives the limit back once its hold could have expired', async () => {
  const caller = await limitedKey(5003, '1');
  // Long enough that the refusal below surely comes before it expires (the two holds took
  // 0.6 s on a loaded machine), then wait until it has.
  const expiresAt = Date.now() + 3000;
  await hold(caller, '0.9', expiresAt - Date.now()); // never settled
  await expect(hold(caller, '0.5')).rejects.toMatchObject({ code: 'spend_limit_exceeded' });
  await new Promise((resolve) => setTimeout(resolve, expiresAt + 200 - Date.now()));
  // The next call finds the dead call's reservation expired and releases it.
  await hold(caller, '0.5');
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0', reserved: '0.5', open: 1 });
});

test('a call that settled but whose release never got through counts what it was charged once its reservation expires', async () => {
  const caller = await limitedKey(5006, '1');
  const held = await hold(caller, '0.9', 1000);
  // The settlement commits; then the database is out of reach for longer than the retry
  // window before the reservation's release (or the process dies just there).
  const unreachable = new Kysely<Database>({
    dialect: new PostgresDialect({
      pool: new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none' }),
    }),
  });
  const cut = new Meter(service.runtime.ledger, unreachable, service.runtime.logger, 200);
  await expect(
    cut.settle(held, new Decimal('0.9'), callRecord(caller, 'req_cut_1', 'ok', 200)),
  ).rejects.toThrow();
  await unreachable.destroy().catch(() => {});
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0', reserved: '0.9', open: 1 });

  await new Promise((resolve) => setTimeout(resolve, 1200));
  expect(await releaseExpiredReservations(service.runtime.database.db, caller.keyId)).toBe(1);
  // Charged 0.9 of its 1: another 0.9 is refused.
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0.9', reserved: '0', open: 0 });
  await expect(hold(caller, '0.9')).rejects.toMatchObject({ code: 'spend_limit_exceeded' });
});

test('the cron job releases expired reservations of every key', async () => {
  const [a, b] = [await limitedKey(5004, '1'), await limitedKey(5005, '1')];
  await hold(a, '0.4', 300);
  await hold(b, '0.6', 300);
  await hold(b, '0.1');
  await new Promise((resolve) => setTimeout(resolve, 400));
  // As the job runs: the overdue holds expire first, and their reservations go with them.
  expect(await releaseExpiredReservations(service.runtime.database.db)).toBe(0);
  await service.runtime.ledger.expireHolds();
  expect(await releaseExpiredReservations(service.runtime.database.db)).toBe(2);
  expect(await keyTotals(a.keyId)).toEqual({ spent: '0', reserved: '0', open: 0 });
  expect(await keyTotals(b.keyId)).toEqual({ spent: '0', reserved: '0.1', open: 1 });
  expect(await releaseExpiredReservations(service.runtime.database.db)).toBe(0);
});

test('a reservation that expires while its settlement is committing is charged what the settlement charged', async () => {
  const caller = await limitedKey(5007, '1');
  const expiresAt = Date.now() + 2000;
  const held = await hold(caller, '0.9', expiresAt - Date.now());
  // The settlement posts the hold in time, then waits to commit: its usage row waits on the
  // user's row, which another transaction holds (what a slow commit looks like from outside).
  const blocker = await database.pool.connect();
  try {
    await blocker.query('begin');
    await blocker.query('select 1 from users where id = $1 for update', [caller.userId]);
    const settling = meter.settle(
      held,
      new Decimal('0.7'),
      callRecord(caller, 'req_settling_at_deadline', 'ok', 200),
    );
    settling.catch(() => {});
    await waitFor('the settlement to wait on the lock', async () => {
      const { rows } = await database.pool.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`,
      );
      return rows[0]!.n > 0;
    });
    expect(Date.now()).toBeLessThan(expiresAt);
    await new Promise((resolve) => setTimeout(resolve, expiresAt + 200 - Date.now()));
    // The expiry job comes by now (its hold expiry skips the hold: the settlement has it
    // locked): the hold is still pending, the call's charge not known yet.
    expect(await releaseExpiredReservations(service.runtime.database.db, caller.keyId)).toBe(0);
    await blocker.query('commit');
    await settling;
  } finally {
    blocker.release();
  }
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0.7', reserved: '0', open: 0 });
  // Charged 0.7 of its 1: another 0.5 is refused.
  await expect(hold(caller, '0.5')).rejects.toMatchObject({ code: 'spend_limit_exceeded' });
});

test("an expiry that comes between a settlement's commit and its own release counts the charge once", async () => {
  const caller = await limitedKey(5008, '1');
  const held = await hold(caller, '0.9', 1500);
  // The settlement commits (hold posted, usage row written); its own release of the
  // reservation then waits: the key's row is held by another transaction (a lock that lets
  // the usage row's foreign key through, but not the key's update).
  const blocker = await database.pool.connect();
  const lockWaits = async (table: string) => {
    const { rows } = await database.pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query like $1`,
      [`%${table}%`],
    );
    return rows[0]!.n;
  };
  let releasing: Promise<number> | undefined;
  try {
    await blocker.query('begin');
    await blocker.query('select 1 from api_keys where id = $1 for no key update', [caller.keyId]);
    const settling = meter.settle(
      held,
      new Decimal('0.7'),
      callRecord(caller, 'req_released_twice', 'ok', 200),
    );
    settling.catch(() => {});
    await waitFor('the settlement to commit and its release to wait on the key', async () => {
      const { rows } = await database.pool.query<{ status: string }>(
        'select status from ledger_holds where id = $1',
        [held.holdId],
      );
      return rows[0]?.status === 'posted' && (await lockWaits('api_key_reservations')) === 1;
    });
    await waitFor('the reservation to be past its deadline', async () => {
      const { rows } = await database.pool.query<{ past: boolean }>(
        'select expires_at < now() as past from api_key_reservations where id = $1',
        [held.reservationId],
      );
      return rows[0]!.past;
    });
    // The expiry job comes by now, as it runs: its hold expiry finds nothing (the hold is
    // posted), and its release sees the settlement's usage row and waits on the reservation.
    await service.runtime.ledger.expireHolds();
    releasing = releaseExpiredReservations(service.runtime.database.db, caller.keyId);
    releasing.catch(() => {});
    await waitFor('the expiry to wait on the reservation', async () => {
      return (await lockWaits('api_key_reservations')) === 2;
    });
    await blocker.query('commit');
    await settling;
  } finally {
    await blocker.query('rollback').catch(() => {});
    blocker.release();
  }
  // The settlement's release won; the expiry found the reservation released and left it.
  expect(await releasing).toBe(0);
  expect(await keyTotals(caller.keyId)).toEqual({ spent: '0.7', reserved: '0', open: 0 });
});
