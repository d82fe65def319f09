import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import { call } from '../accounts/support.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, userWithKey, type TestService } from '../support/service.js';
import { csvObjects } from './tools.js';

// Statement periods that meet at an instant: the closing balance of one is the opening
// balance of the next, even when two writers booked lines on the user's balance within a
// millisecond of that instant and the account's row lock took them in the other order.

let database: TestDatabase;
let service: TestService;
let user: { userId: string; apiKey: string };
/** The instant where the two periods meet (a whole millisecond, ISO 8601 UTC). */
let boundary: string;

interface Statement {
  from: string | null;
  openingBalance: string;
  closingBalance: string;
  totalIn: string;
  totalOut: string;
  lineCount: number;
  lines: Array<{ entryId: string; amount: string; runningBalance: string; createdAt: string }>;
}

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startTestService({ databaseUrl: database.url });
  user = await userWithKey(service, { telegramId: 8801, balance: '10' });
  const { ledger } = service.runtime;
  const customer = `liabilities:customers:${user.userId}`;

  // A writer whose transaction starts just before the boundary (created_at is the start of
  // the writing transaction) ...
  const early = await database.pool.connect();
  try {
    await early.query('begin');
    const { rows } = await early.query<{ boundary: string }>(
      `select to_char((date_trunc('milliseconds', now()) + interval '1 millisecond') at time zone 'UTC',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as boundary`,
    );
    boundary = rows[0]!.boundary;
    // ... and one that starts after it (wait for the database's clock to pass it) ...
    const deadline = Date.now() + 20_000;
    for (;;) {
      const { rows: past } = await database.pool.query<{ past: boolean }>(
        'select clock_timestamp() > $1::timestamptz as past',
        [boundary],
      );
      if (past[0]!.past) break;
      if (Date.now() > deadline) throw new Error(`the clock never passed ${boundary}`);
    }
    // ... but takes the account's lock first.
    await ledger.postEntry({
      kind: 'adjustment',
      description: 'booked after the boundary, applied first',
      postings: [
        { account: 'expenses:promotions', amount: '2' },
        { account: customer, amount: '-2' },
      ],
    });
    const [result] = await ledger.within(early).postEntries([
      {
        kind: 'adjustment',
        description: 'booked before the boundary, applied second',
        postings: [
          { account: 'expenses:promotions', amount: '3' },
          { account: customer, amount: '-3' },
        ],
      },
    ]);
    if (result instanceof Error) throw result;
    await early.query('commit');
  } finally {
    early.release();
  }
  // The case this file is about: versions 2 and 3 are on both sides of the boundary, in
  // the other order.
  const { rows } = await database.pool.query<{ version: string; before: boolean }>(
    `select p.account_version::text as version, e.created_at < $2::timestamptz as before
       from ledger_postings p join ledger_entries e on e.id = p.entry_id
       join ledger_accounts a on a.id = p.account_id
      where a.code = $1 order by p.account_version`,
    [customer, boundary],
  );
  expect(rows).toEqual([
    { version: '1', before: true },
    { version: '2', before: false },
    { version: '3', before: true },
  ]);
}, 60_000);
afterAll(async () => {
  await service?.stop();
  await database?.drop();
});

async function statement(query: string): Promise<Statement> {
  const result = await call<Statement>(service, 'GET', `/api/me/statement?${query}`, {
    token: user.apiKey,
  });
  expect(result.status).toBe(200);
  return result.body;
}

/** Opening plus each line gives each running balance, and the closing balance. */
function expectChained(s: Statement): void {
  let running = new Decimal(s.openingBalance);
  for (const line of s.lines) {
    running = running.add(line.amount);
    expect(line.runningBalance).toBe(running.toString());
  }
  expect(running.toString()).toBe(s.closingBalance);
  expect(new Decimal(s.totalIn).sub(s.totalOut).toString()).toBe(
    new Decimal(s.closingBalance).sub(s.openingBalance).toString(),
  );
  expect(s.lineCount).toBe(s.lines.length);
}

describe('statement periods that meet at an instant', () => {
  test('JSON: the closing balance before it is the opening balance after it; every line in one period', async () => {
    const whole = await statement('');
    const before = await statement(`to=${boundary}`);
    const after = await statement(`from=${boundary}`);
    expectChained(before);
    expectChained(after);
    expect(before.closingBalance).toBe(after.openingBalance);
    expect(before.openingBalance).toBe(whole.openingBalance);
    expect(after.closingBalance).toBe(whole.closingBalance);
    expect([...before.lines, ...after.lines].map((l) => l.entryId)).toEqual(
      whole.lines.map((l) => l.entryId),
    );
    expect(whole.closingBalance).toBe('15');
  });

  test('CSV: the periods split the whole statement, running balances unchanged', async () => {
    const csv = async (query: string) => {
      const result = await call(service, 'GET', `/api/me/statement?format=csv${query}`, {
        token: user.apiKey,
      });
      expect(result.status).toBe(200);
      return csvObjects(result.text);
    };
    const whole = await csv('');
    const before = await csv(`&to=${boundary}`);
    const after = await csv(`&from=${boundary}`);
    expect([...before, ...after]).toEqual(whole);
    // Each part's balances follow on from where the previous part left off.
    let running = new Decimal(0);
    for (const row of [...before, ...after]) {
      running = running.add(row['amount']!);
      expect(row['balance']).toBe(running.toString());
    }
  });
});

describe('from and to on /api/me/statement, to the microsecond', () => {
  /** The first line's time (microseconds, from the CSV) and the microsecond after it. */
  async function firstLine(): Promise<{ entryId: string; justAfter: string }> {
    const result = await call(service, 'GET', '/api/me/statement?format=csv', {
      token: user.apiKey,
    });
    // A line whose next microsecond is not a whole millisecond (where a cut to milliseconds
    // would make no difference): with three lines, there is one.
    for (const row of csvObjects(result.text)) {
      const { rows } = await database.pool.query<{ after: string }>(
        `select to_char(($1::timestamptz + interval '1 microsecond') at time zone 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as after`,
        [row['timestamp']],
      );
      if (!rows[0]!.after.endsWith('000Z'))
        return { entryId: row['entry_id']!, justAfter: rows[0]!.after };
    }
    throw new Error('no line to test with');
  }

  test('a bound a microsecond after a line leaves the line out of from= and in to=', async () => {
    const { entryId, justAfter } = await firstLine();
    const from = await statement(`from=${justAfter}`);
    expect(from.lines.map((l) => l.entryId)).not.toContain(entryId);
    const to = await statement(`to=${justAfter}`);
    expect(to.lines.map((l) => l.entryId)).toContain(entryId);
    const whole = await statement('');
    expect(from.lines.length + to.lines.length).toBe(whole.lines.length);
    expect(to.closingBalance).toBe(from.openingBalance);
    expect(from.from).toBe(justAfter);

    const csv = async (query: string) =>
      csvObjects(
        (
          await call(service, 'GET', `/api/me/statement?format=csv&${query}`, {
            token: user.apiKey,
          })
        ).text,
      ).map((row) => row['entry_id']);
    expect(await csv(`from=${justAfter}`)).not.toContain(entryId);
    expect(await csv(`to=${justAfter}`)).toContain(entryId);
  });

  test('digits past the microsecond are a 400 naming the parameter, zeros there are not', async () => {
    for (const path of ['/api/me/statement', '/api/me/statement?format=csv', '/api/me/usage']) {
      const url = `${path}${path.includes('?') ? '&' : '?'}to=2026-11-27T10:00:00.1234567Z`;
      const result = await call<{ error: { param: string } }>(service, 'GET', url, {
        token: user.apiKey,
      });
      expect({ url, status: result.status }).toEqual({ url, status: 400 });
      expect(result.body.error.param).toBe('to');
    }
    const zeros = await statement('from=2026-11-27T10:00:00.123456000%2B08:00');
    expect(zeros.from).toBe('2026-11-27T02:00:00.123456Z');
    // A from and a to within the same millisecond are still in order.
    const close = await call<{ error: { param: string } }>(
      service,
      'GET',
      '/api/me/statement?from=2026-11-27T10:00:00.000500Z&to=2026-11-27T10:00:00.000100Z',
      { token: user.apiKey },
    );
    expect(close.status).toBe(400);
    expect(close.body.error.param).toBe('from');
  });
});
