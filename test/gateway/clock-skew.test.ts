import { afterEach, expect, test, vi } from 'vitest';
import type { TestDatabase } from '../support/db.js';
import { userWithKey, type TestService } from '../support/service.js';
import { countPromptTokens } from '../support/upstream-stub.js';
import { expectedCost, MODELS, sdk, useGatewayStack } from './fixtures.js';

/**
 * A hold's deadline is enforced by the database's clock (a hold is posted only before it, and
 * expired after it), so it is set on that clock: this process's clock being off by more than
 * `gateway.holdGraceMs` neither expires a call's hold before the call settles (a clock
 * behind) nor keeps a dead call's hold and reservation for that much longer (a clock ahead).
 */

let database: TestDatabase;
let service: TestService;

useGatewayStack(({ database: d, service: s }) => ((database = d), (service = s)));

const HOUR = 3_600_000;

/** This process's clock (Date) moved by `offsetMs` from the real time the database keeps. */
function skewProcessClock(offsetMs: number): void {
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + offsetMs, shouldAdvanceTime: true });
}

afterEach(() => {
  vi.useRealTimers();
});

/** The call's hold and reservation: how long the hold was taken for, by the database's clock. */
async function heldFor(userId: string) {
  const { rows } = await database.pool.query<{
    status: string;
    posted: string;
    held_ms: string;
    reservation_expires_with_hold: boolean;
  }>(
    `select h.status, trim_scale(h.posted_amount)::text as posted,
            (extract(epoch from h.expires_at - h.created_at) * 1000)::bigint::text as held_ms,
            r.expires_at = h.expires_at as reservation_expires_with_hold
       from ledger_holds h join api_key_reservations r on r.hold_id = h.id
      where h.debit_account_id = (select id from ledger_accounts where code = $1)`,
    [`liabilities:customers:${userId}`],
  );
  return rows;
}

async function keySpend(keyId: string) {
  const { rows } = await database.pool.query(
    `select trim_scale(spent_usd)::text as spent, trim_scale(reserved_usd)::text as reserved
       from api_keys where id = $1`,
    [keyId],
  );
  return rows[0];
}

/** What the gateway holds a call for: the provider's timeout, the call's limit, the grace. */
const holdMs = () =>
  1500 +
  service.runtime.config.gateway.maxCallDurationMs +
  service.runtime.config.gateway.holdGraceMs;

for (const [clock, offsetMs] of [
  ['an hour behind', -HOUR],
  ['an hour ahead of', HOUR],
] as const) {
  test(`a process clock ${clock} the database: the call's hold is taken for holdMs by the database's clock, and settles`, async () => {
    const { userId, keyId, apiKey } = await userWithKey(service, {
      telegramId: offsetMs < 0 ? 7001 : 7002,
      balance: '5',
      key: { spendLimitUsd: '1' },
    });
    skewProcessClock(offsetMs);
    const messages = [{ role: 'user' as const, content: 'Say hello [[tokens=20]]' }];
    const { response } = await sdk(service.url, apiKey)
      .chat.completions.create({ model: 'gpt-4o-mini', messages })
      .withResponse();
    vi.useRealTimers();
    const cost = expectedCost(MODELS.mini, {
      prompt: countPromptTokens({ messages }),
      completion: 20,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('x-lingxi-cost')).toBe(cost.toString());

    const [hold, ...others] = await heldFor(userId);
    expect(others).toEqual([]);
    expect(hold).toMatchObject({
      status: 'posted',
      posted: cost.toString(),
      reservation_expires_with_hold: true,
    });
    // From its creation (the database's now()) to its deadline: holdMs, give or take the
    // moments between reading the clock and the insert (a minute is far more than those, and
    // far less than the hour this process's clock is off).
    expect(Math.abs(Number(hold!.held_ms) - holdMs())).toBeLessThan(60_000);
    expect(await keySpend(keyId)).toEqual({ spent: cost.toString(), reserved: '0' });
    const { rows: usage } = await database.pool.query(
      `select outcome, trim_scale(cost_usd)::text as cost from usage_records where user_id = $1`,
      [userId],
    );
    expect(usage).toEqual([{ outcome: 'ok', cost: cost.toString() }]);
  });
}
