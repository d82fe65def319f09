/* eslint-disable @typescript-eslint/no-explicit-any -- results differ per operation */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal, LedgerError, type PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { deadlineIn, expectLedgerLaws, runParameters, waitPast } from './lawChecks.js';

/**
 * Like property.test.ts, with deadlines that pass while a run goes on: holds due a moment
 * after they are made, which each of two ledgers (two processes, separate pools) remembers as
 * pending until a step waits for the database's clock to pass them. Posts, voids, spends and
 * expiries then run on either ledger, whose memory of the holds and accounts the other one's
 * writes and the clock have made stale. Where a deadline falls between a step's start and end
 * by the database's clock, either outcome is right and the model follows what happened. After
 * every run: the balances agree with the model and every law holds (expectLedgerLaws).
 */

let database: TestDatabase;
let ledgers: PostgresLedger[];

beforeAll(async () => {
  database = await createTestDatabase();
  ledgers = [await openLedger(database.newPool(4)), await openLedger(database.newPool(4))];
});
afterAll(async () => {
  await Promise.all(ledgers.map((l) => l.close()));
  await database.drop();
});

type Deadline = 'none' | 'soon' | 'past';
type Op = { via: number } & (
  | { type: 'credit'; user: number; cents: number }
  | { type: 'charge'; user: number; cents: number }
  | { type: 'hold'; user: number; cents: number; deadline: Deadline }
  | { type: 'post'; hold: number; cents: number; allowOver: boolean }
  | { type: 'void'; hold: number }
  | { type: 'expire' }
  | { type: 'wait' }
);

const USERS = 2;
const via = fc.nat(1);
const user = fc.nat(USERS - 1);
/** Mostly one of the first few holds of a run, now and then one past them. */
const index = fc.oneof({ arbitrary: fc.nat(3), weight: 4 }, { arbitrary: fc.nat(8), weight: 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      type: fc.constant('credit' as const),
      user,
      cents: fc.integer({ min: 1, max: 1_000 }),
      via,
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      type: fc.constant('charge' as const),
      user,
      cents: fc.integer({ min: 1, max: 600 }),
      via,
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      type: fc.constant('hold' as const),
      user,
      cents: fc.integer({ min: 1, max: 500 }),
      deadline: fc.constantFrom<Deadline>('none', 'soon', 'soon', 'past'),
      via,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      type: fc.constant('post' as const),
      hold: index,
      cents: fc.integer({ min: 0, max: 1_000 }),
      allowOver: fc.boolean(),
      via,
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ type: fc.constant('void' as const), hold: index, via }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('expire' as const), via }), weight: 1 },
  { arbitrary: fc.record({ type: fc.constant('wait' as const), via }), weight: 1 },
);

interface ModelHold {
  id: string;
  user: number;
  amount: Decimal;
  deadline: Date | null;
  status: 'pending' | 'posted' | 'voided' | 'expired';
  posted?: Decimal;
}

/** Fewer runs than property.test.ts by default: each waits on deadlines (FC_RUNS sets more). */
const parameters = runParameters(process.env, 40);
let run = 0;

test('with deadlines passing mid-run and two processes, the ledger agrees with a model of its rules', async () => {
  const replay = parameters.path ? ` FC_PATH=${parameters.path}` : '';
  console.info(
    `ledger expiry property test: FC_SEED=${parameters.seed} FC_RUNS=${parameters.numRuns}${replay}` +
      ' (set them to replay this run)',
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(opArb, { minLength: 8, maxLength: 30, size: 'medium' }),
      async (ops) => {
        run += 1;
        const code = (u: number) => `liabilities:customers:e${run}u${u}`;
        const receivable = (u: number) => `assets:receivables:customers:e${run}u${u}`;
        const posted = Array.from({ length: USERS }, () => new Decimal(0));
        const owed = Array.from({ length: USERS }, () => new Decimal(0));
        const holds: ModelHold[] = [];
        const held = (u: number) =>
          holds
            .filter((h) => h.user === u && h.status === 'pending')
            .reduce((sum, h) => sum.add(h.amount), new Decimal(0));
        const available = (u: number) => posted[u]!.sub(held(u));
        const cents = (n: number) => new Decimal(n).div(100);
        // Each customer starts with 5: enough for some holds, not for every call above its hold.
        for (let u = 0; u < USERS; u += 1) {
          await ledgers[u % 2]!.postEntry({
            kind: 'adjustment',
            postings: [
              { account: 'expenses:promotions', amount: '5' },
              { account: code(u), amount: '-5' },
            ],
          });
          posted[u] = new Decimal(5);
        }
        const dbNow = async () =>
          (await database.pool.query<{ now: Date }>('select clock_timestamp() as now')).rows[0]!
            .now;

        for (const op of ops) {
          const ledger = ledgers[op.via]!;
          const label = JSON.stringify(op);
          const attempt = async (call: () => Promise<any>) =>
            call().then(
              (value) => ({ code: 'ok', value }),
              (error: unknown) => {
                if (error instanceof LedgerError) return { code: error.code, value: error };
                throw error;
              },
            );
          switch (op.type) {
            case 'credit':
            case 'charge': {
              const amount = cents(op.cents);
              const sign = op.type === 'credit' ? 1 : -1;
              const expected =
                sign > 0 || available(op.user).gte(amount) ? 'ok' : 'insufficient_funds';
              const { code: outcome } = await attempt(() =>
                ledger.postEntry({
                  kind: 'adjustment',
                  postings: [
                    { account: 'expenses:promotions', amount: amount.mul(sign) },
                    { account: code(op.user), amount: amount.mul(-sign) },
                  ],
                }),
              );
              expect(outcome, label).toBe(expected);
              if (outcome === 'ok') posted[op.user] = posted[op.user]!.add(amount.mul(sign));
              break;
            }
            case 'hold': {
              const amount = cents(op.cents);
              const deadline =
                op.deadline === 'none'
                  ? null
                  : await deadlineIn(database.pool, op.deadline === 'soon' ? 200 : -1000);
              const expected = available(op.user).gte(amount) ? 'ok' : 'insufficient_funds';
              const { code: outcome, value } = await attempt(() =>
                ledger.createHold({
                  debitAccount: code(op.user),
                  creditAccount: 'revenue:usage',
                  amount,
                  ...(deadline ? { expiresAt: deadline } : {}),
                }),
              );
              expect(outcome, label).toBe(expected);
              if (outcome === 'ok')
                holds.push({
                  id: value.holdId,
                  user: op.user,
                  amount,
                  deadline,
                  status: 'pending',
                });
              break;
            }
            case 'post': {
              const hold = holds[op.hold];
              if (!hold) break;
              const value = cents(op.cents);
              /** What posting should answer if the hold is, or is not, past its deadline. */
              const verdict = (overdue: boolean) => {
                if (hold.status === 'posted' && hold.posted!.eq(value)) return 'ok';
                if (hold.status !== 'pending' || overdue) return 'hold_not_pending';
                if (value.gt(hold.amount) && !op.allowOver) return 'hold_exceeded';
                return 'ok';
              };
              const before = await dbNow();
              const { code: outcome, value: result } = await attempt(() =>
                ledger.postHold({
                  holdId: hold.id,
                  amount: value,
                  ...(op.allowOver
                    ? { allowOverHold: true, shortfallAccount: receivable(hold.user) }
                    : {}),
                }),
              );
              const after = await dbNow();
              // The database decides at some moment between `before` and `after`.
              const possible = new Set<string>();
              if (hold.deadline === null || hold.deadline > before) possible.add(verdict(false));
              if (hold.deadline !== null && hold.deadline <= after) possible.add(verdict(true));
              expect([...possible], label).toContain(outcome);
              if (outcome !== 'ok' || hold.status === 'posted') break;
              const canCover = Decimal.max(available(hold.user).add(hold.amount), 0);
              const covered = value.gt(hold.amount) ? Decimal.min(value, canCover) : value;
              expect(result.shortfall.toString(), label).toBe(value.sub(covered).toString());
              hold.status = 'posted';
              hold.posted = value;
              posted[hold.user] = posted[hold.user]!.sub(covered);
              owed[hold.user] = owed[hold.user]!.add(value.sub(covered));
              break;
            }
            case 'void': {
              const hold = holds[op.hold];
              if (!hold) break;
              const expected = ['pending', 'voided'].includes(hold.status)
                ? 'ok'
                : 'hold_not_pending';
              const { code: outcome } = await attempt(() => ledger.voidHold({ holdId: hold.id }));
              expect(outcome, label).toBe(expected);
              if (outcome === 'ok') hold.status = 'voided';
              break;
            }
            case 'expire': {
              const before = await dbNow();
              const { expiredHoldIds } = await ledger.expireHolds();
              const after = await dbNow();
              const expired = new Set<string>(expiredHoldIds);
              for (const hold of holds) {
                const overdue = hold.status === 'pending' && hold.deadline !== null;
                if (overdue && hold.deadline! <= before)
                  expect(expired.has(hold.id), label).toBe(true);
                if (!overdue || hold.deadline! > after)
                  expect(expired.has(hold.id), label).toBe(false);
                if (expired.has(hold.id)) hold.status = 'expired';
              }
              break;
            }
            case 'wait': {
              const due = holds.filter((h) => h.status === 'pending' && h.deadline !== null);
              for (const hold of due) await waitPast(database.pool, hold.deadline!);
              break;
            }
          }
        }

        const ledger = ledgers[0]!;
        for (let u = 0; u < USERS; u += 1) {
          const balance = await ledger.getBalance(code(u)).catch(() => null);
          expect(balance?.posted.toString() ?? '0').toBe(posted[u]!.toString());
          expect(balance?.held.toString() ?? '0').toBe(held(u).toString());
          const debt = await ledger.getBalance(receivable(u)).catch(() => null);
          expect(debt?.posted.toString() ?? '0').toBe(owed[u]!.toString());
        }
        for (const hold of holds)
          expect((await ledger.getHold(hold.id))?.status, hold.id).toBe(hold.status);
        await expectLedgerLaws(ledger, database.pool);
      },
    ),
    parameters,
  );
});
