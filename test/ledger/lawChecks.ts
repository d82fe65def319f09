import type pg from 'pg';
import { expect } from 'vitest';
import type { PostgresLedger } from '../../ledger/index.js';

/**
 * Every ledger law a test can check from the outside, on the whole database: cached totals
 * equal postings and pending holds, the trial balance nets to zero per currency, every entry
 * balances per currency, no no-overdraft account has a negative available balance, a hold has
 * an entry exactly when it was posted for more than zero (and that entry is the one it names,
 * crediting its credit account the posted amount, with any shortfall debited to an account
 * other than the hold's two), and a reversal moves exactly what the entry it reverses moved.
 */
export async function expectLedgerLaws(ledger: PostgresLedger, pool: pg.Pool): Promise<void> {
  expect(await ledger.checkBalances()).toEqual([]);
  const { totals } = await ledger.trialBalance();
  for (const total of totals)
    expect(`${total.currency} ${total.net.toString()}`).toBe(`${total.currency} 0`);
  const query = async (text: string) => (await pool.query(text)).rows;
  expect(
    await query(
      `select entry_id, currency from ledger_postings group by 1, 2 having sum(amount) <> 0`,
    ),
  ).toEqual([]);
  expect(
    await query(`select code from ledger_accounts where no_negative and (case when type in ('asset', 'expense')
      then debits_posted - credits_posted - credits_pending else credits_posted - debits_posted - debits_pending end) < 0`),
  ).toEqual([]);
  expect(
    await query(`select h.id, h.status from ledger_holds h left join ledger_entries e on e.hold_id = h.id
      where (h.status = 'posted' and h.posted_amount > 0) <> (e.id is not null)
         or e.id is distinct from h.entry_id
         or (e.id is not null and (select coalesce(sum(p.amount), 0) from ledger_postings p
               where p.entry_id = e.id and p.account_id = h.credit_account_id) <> -h.posted_amount)
         or (e.id is not null and (select coalesce(sum(p.amount), 0) from ledger_postings p
               where p.entry_id = e.id and p.account_id not in (h.debit_account_id, h.credit_account_id))
               <> coalesce(h.shortfall, 0))`),
  ).toEqual([]);
  expect(
    await query(`select r.id from ledger_entries r where r.reverses_entry_id is not null
      and (select sum(abs(amount)) from ledger_postings where entry_id = r.id)
       <> (select sum(abs(amount)) from ledger_postings where entry_id = r.reverses_entry_id)`),
  ).toEqual([]);
}

/** Polls `condition` until it holds (a wait on a state, never a fixed sleep); fails after 30 s. */
export async function waitFor(what: string, condition: () => Promise<boolean>): Promise<void> {
  const giveUpAt = Date.now() + 30_000;
  while (!(await condition())) {
    if (Date.now() > giveUpAt) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A deadline `ms` ahead by the database's clock. */
export async function deadlineIn(pool: pg.Pool, ms: number): Promise<Date> {
  const { rows } = await pool.query<{ at: Date }>(
    `select clock_timestamp() + make_interval(secs => $1::float8 / 1000) as at`,
    [ms],
  );
  return rows[0]!.at;
}

/** Waits until the database's clock has passed `deadline`. */
export async function waitPast(pool: pg.Pool, deadline: Date): Promise<void> {
  await waitFor('the deadline to pass', async () => {
    const { rows } = await pool.query<{ past: boolean }>(
      `select clock_timestamp() > $1::timestamptz as past`,
      [deadline],
    );
    return rows[0]!.past;
  });
}

/** The error code of a rejected ledger call, or 'ok'. */
export async function outcomeOf(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => 'ok',
    (error: unknown) => {
      const code = (error as { code?: unknown }).code;
      if (typeof code === 'string' && /^[a-z_]+$/.test(code)) return code;
      throw error;
    },
  );
}

/**
 * The runs' seed and count: `FC_SEED` replays a run (a failure prints the seed it ran with,
 * and `FC_PATH` the counterexample's path to skip straight to it), `FC_RUNS` runs more or
 * fewer cases than the default 100. A value that is not an integer is refused rather than
 * silently replaced.
 */
export function runParameters(
  env: NodeJS.ProcessEnv,
  defaultRuns = 100,
): {
  seed: number;
  numRuns: number;
  path?: string;
} {
  const integer = (name: string, min: number): number | undefined => {
    const text = env[name]?.trim();
    if (text === undefined || text === '') return undefined;
    const value = Number(text);
    if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(value) || value < min)
      throw new Error(`${name} must be an integer of at least ${min}, not "${env[name]}"`);
    return value;
  };
  // fast-check's own default seed, drawn here so that it can be printed before the runs.
  const seed =
    integer('FC_SEED', Number.MIN_SAFE_INTEGER) ?? Date.now() ^ (Math.random() * 0x100000000);
  const numRuns = integer('FC_RUNS', 1) ?? defaultRuns;
  const path = env['FC_PATH']?.trim();
  return { seed, numRuns, ...(path ? { path } : {}) };
}
