/* eslint-disable @typescript-eslint/no-explicit-any -- results differ per operation */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { Decimal, LedgerError, type PostgresLedger } from '../../ledger/index.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { openLedger } from '../support/ledger.js';
import { runParameters } from './lawChecks.js';

/**
 * Random sequences of credits (some under idempotency keys), holds, posts, voids, expiries and
 * reversals (some booking shortfalls, some of reversals), run against the real ledger and
 * against a few lines of in-memory model of the same rules. Each step runs through one of two
 * ledgers on separate pools, as two processes would: what one remembers of accounts and holds
 * goes stale when the other writes. After every step the outcome (done or refused, and why)
 * must agree; at the end every balance must agree and the cached balances must equal the
 * postings.
 */

let database: TestDatabase;
let ledgers: PostgresLedger[];

beforeAll(async () => {
  database = await createTestDatabase();
  ledgers = [await openLedger(database.pool), await openLedger(database.newPool(4))];
});
afterAll(async () => {
  await Promise.all(ledgers.map((l) => l.close()));
  await database.drop();
});

/** Which of the two ledgers (processes) runs the step. */
type Via = { via: number };
type Op = Via &
  (
    | { type: 'credit'; user: number; cents: number; key: number | undefined }
    | { type: 'hold'; user: number; cents: number; overdue: boolean }
    | { type: 'post'; hold: number; cents: number; allowOver: boolean }
    | { type: 'void'; hold: number }
    | { type: 'expire' }
    | { type: 'reverse'; entry: number; shortfall: boolean }
  );

const USERS = 3;
const via = fc.nat(1);
/** Mostly one of the first few holds or entries (a run makes a handful), now and then one past them. */
const index = fc.oneof({ arbitrary: fc.nat(5), weight: 4 }, { arbitrary: fc.nat(30), weight: 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    type: fc.constant('credit' as const),
    user: fc.nat(USERS - 1),
    cents: fc.integer({ min: 1, max: 5_000 }),
    key: fc.option(fc.nat(3), { nil: undefined }),
    via,
  }),
  fc.record({
    type: fc.constant('hold' as const),
    user: fc.nat(USERS - 1),
    cents: fc.integer({ min: 1, max: 3_000 }),
    overdue: fc.boolean(),
    via,
  }),
  fc.record({
    type: fc.constant('post' as const),
    hold: index,
    cents: fc.integer({ min: 0, max: 3_500 }),
    allowOver: fc.boolean(),
    via,
  }),
  fc.record({ type: fc.constant('void' as const), hold: index, via }),
  fc.record({ type: fc.constant('expire' as const), via }),
  fc.record({
    type: fc.constant('reverse' as const),
    entry: index,
    shortfall: fc.boolean(),
    via,
  }),
);

interface ModelHold {
  id: string;
  user: number;
  amount: Decimal;
  status: 'pending' | 'posted' | 'voided' | 'expired';
  overdue: boolean;
  posted?: Decimal;
}
interface ModelEntry {
  id: string;
  /** Change of the customer's posted balance the entry made. */
  userDelta: Map<number, Decimal>;
  /** Change of the customer's receivable the entry made. */
  owedDelta: Map<number, Decimal>;
  reversed: boolean;
}

const parameters = runParameters(process.env);
let run = 0;

test('the ledger agrees with an in-memory model of its rules', async () => {
  const replay = parameters.path ? ` FC_PATH=${parameters.path}` : '';
  console.info(
    `ledger property test: FC_SEED=${parameters.seed} FC_RUNS=${parameters.numRuns}${replay}` +
      ' (set them to replay this run)',
  );
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
      run += 1;
      const code = (user: number) => `liabilities:customers:p${run}u${user}`;
      const receivable = (user: number) => `assets:receivables:customers:p${run}u${user}`;
      const posted = Array.from({ length: USERS }, () => new Decimal(0));
      const owed = Array.from({ length: USERS }, () => new Decimal(0));
      const held = () => {
        const sums = Array.from({ length: USERS }, () => new Decimal(0));
        for (const h of holds)
          if (h.status === 'pending') sums[h.user] = sums[h.user]!.add(h.amount);
        return sums;
      };
      const available = (user: number) => posted[user]!.sub(held()[user]!);
      const holds: ModelHold[] = [];
      const entries: ModelEntry[] = [];
      /** Credits made under a key: the request and the entry it wrote. */
      const keyed = new Map<number, { user: number; cents: number; entryId: string }>();

      for (const op of ops) {
        const ledger = ledgers[op.via]!;
        const step = plan(op, ledger);
        const outcome = await step.execute().then(
          (result) => {
            step.onSuccess?.(result);
            return 'ok';
          },
          (e: unknown) => {
            if (e instanceof LedgerError) return e.code;
            throw e;
          },
        );
        expect(outcome, JSON.stringify(op)).toBe(step.expected);
      }

      const ledger = ledgers[0]!;
      for (let user = 0; user < USERS; user += 1) {
        const balance = await ledger.getBalance(code(user)).catch(() => null);
        expect(balance?.posted.toString() ?? '0').toBe(posted[user]!.toString());
        expect(balance?.held.toString() ?? '0').toBe(held()[user]!.toString());
        const debt = await ledger.getBalance(receivable(user)).catch(() => null);
        expect(debt?.posted.toString() ?? '0').toBe(owed[user]!.toString());
      }
      expect(await ledger.checkBalances()).toEqual([]);

      /** The model's verdict on an operation, the call to the ledger, and the model's update when it succeeds. */
      function plan(
        op: Op,
        ledger: PostgresLedger,
      ): {
        expected: string;
        execute(): Promise<any>;
        onSuccess?(result: any): void;
      } {
        const amount = (cents: number) => new Decimal(cents).div(100);
        const missing = '00000000-0000-7000-8000-00000000dead';
        switch (op.type) {
          case 'credit': {
            const first = op.key === undefined ? undefined : keyed.get(op.key);
            const replay =
              first !== undefined && first.user === op.user && first.cents === op.cents;
            return {
              expected: first && !replay ? 'idempotency_conflict' : 'ok',
              execute: () =>
                ledger.postEntry({
                  kind: 'adjustment',
                  postings: [
                    { account: 'expenses:promotions', amount: amount(op.cents) },
                    { account: code(op.user), amount: amount(op.cents).neg() },
                  ],
                  ...(op.key === undefined ? {} : { idempotencyKey: `p${run}k${op.key}` }),
                }),
              onSuccess({ entryId, replayed }) {
                expect(replayed).toBe(replay);
                if (replay) {
                  expect(entryId).toBe(first.entryId);
                  return;
                }
                if (op.key !== undefined)
                  keyed.set(op.key, { user: op.user, cents: op.cents, entryId });
                posted[op.user] = posted[op.user]!.add(amount(op.cents));
                entries.push({
                  id: entryId,
                  userDelta: new Map([[op.user, amount(op.cents)]]),
                  owedDelta: new Map(),
                  reversed: false,
                });
              },
            };
          }
          case 'hold':
            return {
              expected: available(op.user).gte(amount(op.cents)) ? 'ok' : 'insufficient_funds',
              execute: () =>
                ledger.createHold({
                  debitAccount: code(op.user),
                  creditAccount: 'revenue:usage',
                  amount: amount(op.cents),
                  expiresAt: new Date(Date.now() + (op.overdue ? -60_000 : 3_600_000)),
                }),
              onSuccess({ holdId }) {
                holds.push({
                  id: holdId,
                  user: op.user,
                  amount: amount(op.cents),
                  status: 'pending',
                  overdue: op.overdue,
                });
              },
            };
          case 'post': {
            const hold = holds[op.hold];
            const value = amount(op.cents);
            if (!hold)
              return {
                expected: 'hold_not_found',
                execute: () => ledger.postHold({ holdId: missing, amount: value }),
              };
            const replay = hold.status === 'posted' && hold.posted!.eq(value);
            let expected = 'ok';
            if (!replay && (hold.status !== 'pending' || hold.overdue))
              expected = 'hold_not_pending';
            else if (!replay && value.gt(hold.amount) && !op.allowOver) expected = 'hold_exceeded';
            const canCover = Decimal.max(available(hold.user).add(hold.amount), 0);
            const covered = value.gt(hold.amount) ? Decimal.min(value, canCover) : value;
            return {
              expected,
              execute: () =>
                ledger.postHold({
                  holdId: hold.id,
                  amount: value,
                  ...(op.allowOver
                    ? { allowOverHold: true, shortfallAccount: receivable(hold.user) }
                    : {}),
                }),
              onSuccess(result) {
                if (replay) return;
                expect(result.shortfall.toString()).toBe(value.sub(covered).toString());
                hold.status = 'posted';
                hold.posted = value;
                const short = value.sub(covered);
                posted[hold.user] = posted[hold.user]!.sub(covered);
                owed[hold.user] = owed[hold.user]!.add(short);
                if (result.entryId) {
                  entries.push({
                    id: result.entryId,
                    userDelta: new Map(covered.isZero() ? [] : [[hold.user, covered.neg()]]),
                    owedDelta: new Map(short.isZero() ? [] : [[hold.user, short]]),
                    reversed: false,
                  });
                }
              },
            };
          }
          case 'void': {
            const hold = holds[op.hold];
            const expected = !hold
              ? 'hold_not_found'
              : ['pending', 'voided'].includes(hold.status)
                ? 'ok'
                : 'hold_not_pending';
            return {
              expected,
              execute: () => ledger.voidHold({ holdId: hold?.id ?? missing }),
              onSuccess() {
                hold!.status = 'voided';
              },
            };
          }
          case 'expire': {
            const overdue = holds.filter((h) => h.status === 'pending' && h.overdue);
            return {
              expected: 'ok',
              execute: () => ledger.expireHolds(),
              onSuccess({ expiredHoldIds }) {
                const mine = new Set(holds.map((h) => h.id));
                expect(expiredHoldIds.filter((id: string) => mine.has(id)).sort()).toEqual(
                  overdue.map((h) => h.id).sort(),
                );
                for (const h of overdue) h.status = 'expired';
              },
            };
          }
          case 'reverse': {
            const entry = entries[op.entry];
            let expected = 'ok';
            if (!entry) expected = 'entry_not_found';
            else if (entry.reversed) expected = 'already_reversed';
            else if (
              !op.shortfall &&
              [...entry.userDelta].some(
                ([user, delta]) => delta.isPositive() && available(user).lt(delta),
              )
            ) {
              expected = 'insufficient_funds';
            }
            const users = entry ? [...entry.userDelta.keys()] : [];
            return {
              expected,
              execute: () =>
                ledger.reverseEntry({
                  entryId: entry?.id ?? missing,
                  ...(op.shortfall
                    ? {
                        shortfallAccounts: Object.fromEntries(
                          users.map((user) => [code(user), receivable(user)]),
                        ),
                      }
                    : {}),
                }),
              onSuccess(result) {
                entry!.reversed = true;
                const reversal: ModelEntry = {
                  id: result.entryId,
                  userDelta: new Map(),
                  owedDelta: new Map(),
                  reversed: false,
                };
                const shortfalls: Record<string, string> = {};
                for (const [user, delta] of entry!.userDelta) {
                  // What the customer's balance cannot give back is owed instead.
                  const cover = delta.isPositive()
                    ? Decimal.min(delta, Decimal.max(available(user), 0))
                    : delta;
                  const short = delta.sub(cover);
                  posted[user] = posted[user]!.sub(cover);
                  owed[user] = owed[user]!.add(short);
                  if (!cover.isZero()) reversal.userDelta.set(user, cover.neg());
                  if (!short.isZero()) {
                    reversal.owedDelta.set(user, short);
                    shortfalls[receivable(user)] = short.toString();
                  }
                }
                for (const [user, delta] of entry!.owedDelta) {
                  owed[user] = owed[user]!.sub(delta);
                  reversal.owedDelta.set(
                    user,
                    (reversal.owedDelta.get(user) ?? new Decimal(0)).sub(delta),
                  );
                }
                expect(result.shortfalls).toEqual(shortfalls);
                entries.push(reversal);
              },
            };
          }
        }
      }
    }),
    parameters,
  );
});
