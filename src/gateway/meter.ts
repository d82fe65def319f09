import { randomUUID } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import {
  Decimal,
  HoldNotFoundError,
  HoldNotPendingError,
  InsufficientFundsError,
  type Attachment,
  type PostgresLedger,
} from '../../ledger/index.js';
import { accounts } from '../billing/accounts.js';
import type { Database } from '../db/schema.js';
import { isDatabaseUnavailable, retryWhileUnavailable } from '../db/unavailable.js';
import { AppError } from '../errors.js';
import type { ApiCaller } from '../keys/keyAuthenticator.js';
import type { WorkTracker } from '../lifecycle.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { DatabaseClock } from '../time/databaseClock.js';
import type { TokenUsage } from './pricing.js';

/** How a call ended, as recorded on its usage record. */
export type CallOutcome =
  | 'ok'
  | 'client_disconnected'
  | 'upstream_error'
  | 'upstream_timeout'
  | 'upstream_malformed'
  /** A call cut by `gateway.maxCallDurationMs`: a stream waiting for upstream or the client, or a call waiting for upstream's answer (504). */
  | 'deadline_exceeded'
  | 'insufficient_balance'
  | 'spend_limit'
  | 'rate_limited';

/** Everything a usage record holds: numbers and timestamps, never the prompt or the completion. */
export interface CallRecord {
  requestId: string;
  caller: ApiCaller;
  endpoint: 'chat.completions' | 'embeddings';
  model: string;
  provider: string | null;
  priceId: string | null;
  stream: boolean;
  usage: TokenUsage;
  estimated: boolean;
  startedAt: Date;
  firstByteAt: Date | null;
  finishedAt: Date;
  httpStatus: number;
  outcome: CallOutcome;
  clientIp: string | null;
  userAgent: string | null;
}

/** A hold whose creation's answer was lost: the call failed (503); it is released later. */
interface LostHold {
  holdId: string;
  reservationId: string | null;
  requestId: string;
  /** When its hold expires, by this process's clock: the release gives up then. */
  giveUpAtMs: number;
  /** What `createHold` threw (it names the lost write). */
  error: unknown;
}

/** What a background release of a lost hold found (the `result` label of its metric). */
type LostHoldResult = 'released' | 'never_created' | 'expired' | 'gave_up' | 'stopped';

export interface HeldCall {
  holdId: string;
  maxCost: Decimal;
  /** The call's reservation against its key's spend limit; null when the key has none. */
  reservationId: string | null;
}

const USAGE_COLUMNS = {
  request_id: 'text',
  key_id: 'uuid',
  user_id: 'bigint',
  endpoint: 'text',
  model: 'text',
  provider: 'text',
  price_id: 'bigint',
  stream: 'boolean',
  prompt_tokens: 'bigint',
  cached_tokens: 'bigint',
  cache_write_tokens: 'bigint',
  completion_tokens: 'bigint',
  reasoning_tokens: 'bigint',
  cost_usd: 'numeric',
  shortfall_usd: 'numeric',
  estimated: 'boolean',
  hold_id: 'uuid',
  entry_id: 'uuid',
  reservation_id: 'uuid',
  started_at: 'timestamptz',
  first_byte_at: 'timestamptz',
  finished_at: 'timestamptz',
  latency_ms: 'integer',
  http_status: 'integer',
  outcome: 'text',
  client_ip: 'text',
  user_agent: 'text',
} as const;

/**
 * Money for API calls: holds the most a call can cost before it goes upstream, then settles
 * the hold for the exact cost (or releases it when nothing is charged). The usage record is
 * committed in the same statement as the ledger change, so the sum of usage costs always
 * equals the revenue postings. A settlement or release that cannot reach the database is
 * tried again for up to `retryMs` (the call has been served, or upstream paid for it): both
 * are safe to repeat, since a hold resolves once and a repeat replays the first result.
 */
export class Meter {
  /** Aborted by `stopReleases`: the background releases of lost holds give up. */
  private readonly stopping = new AbortController();
  /** The clock holds' deadlines are set on: the database's, which enforces them. */
  private readonly clock: DatabaseClock;

  constructor(
    private readonly ledger: PostgresLedger,
    private readonly db: Kysely<Database>,
    private readonly logger: Logger,
    private readonly retryMs = 60_000,
    /** Where background releases of lost holds are tracked (a shutdown waits) and counted. */
    private readonly background: { work?: WorkTracker; metrics?: Metrics } = {},
  ) {
    this.clock = new DatabaseClock(db);
  }

  /**
   * Holds `maxCost` on the caller's balance for `holdMs`; 402 when the balance or the key's
   * spend limit cannot cover it. The hold's deadline (and its reservation's) is `holdMs` from
   * now by the database's clock, which enforces it: this process's clock may be off.
   */
  async hold(params: {
    caller: ApiCaller;
    requestId: string;
    model: string;
    maxCost: Decimal;
    holdMs: number;
  }): Promise<HeldCall> {
    const { caller, maxCost } = params;
    const giveUpAtMs = Date.now() + params.holdMs;
    const expiresAt = new Date((await this.clock.now()) + params.holdMs);
    // Chosen here, so the hold can be named (and voided) even if the ledger's answer is lost,
    // and its reservation names it.
    const holdId = uuidv7();
    const reservationId =
      caller.spendLimitUsd === null ? null : await this.reserve(caller, maxCost, expiresAt, holdId);
    try {
      await this.ledger.createHold({
        holdId,
        debitAccount: accounts.customer(caller.userId),
        creditAccount: accounts.usageRevenue,
        amount: maxCost,
        expiresAt,
        metadata: { requestId: params.requestId, keyId: caller.keyId, model: params.model },
      });
      return { holdId, maxCost, reservationId };
    } catch (error) {
      if (this.ledger.isLostWrite(error)) {
        // The database went away before answering, for longer than the ledger waits to find
        // out: the hold may have been created. The call fails (503, never forwarded); the hold
        // and the reservation are released in the background once the database is back.
        this.releaseLostHold({
          holdId,
          reservationId,
          requestId: params.requestId,
          giveUpAtMs,
          error,
        });
        throw error;
      }
      await this.releaseReservation(reservationId, new Decimal(0));
      if (error instanceof InsufficientFundsError) {
        const available = String(error.details['available'] ?? '0');
        throw new AppError(
          'insufficient_balance',
          `insufficient balance: this call may cost up to ${maxCost.toString()} USD and ${available} USD is available; top up to continue`,
          { status: 402, type: 'insufficient_quota' },
        );
      }
      throw error;
    }
  }

  /** Charges exactly `cost` against the hold and commits the usage record with it. */
  async settle(
    held: HeldCall,
    cost: Decimal,
    record: CallRecord,
  ): Promise<{ entryId: string | null; shortfall: Decimal }> {
    const result = await this.persist(record, 'settlement', () =>
      this.ledger.postHold({
        holdId: held.holdId,
        amount: cost,
        allowOverHold: true,
        shortfallAccount: accounts.receivable(record.caller.userId),
        kind: 'usage',
        description: `${record.endpoint} ${record.model}`,
        metadata: {
          requestId: record.requestId,
          model: record.model,
          keyId: record.caller.keyId,
          priceId: record.priceId,
        },
        attach: (outcome) => [
          usageAttachment(record, {
            cost,
            shortfall: outcome.shortfall,
            held,
            entryId: outcome.entryId,
          }),
        ],
      }),
    );
    await this.persist(record, 'spend-limit release', () =>
      this.releaseReservation(held.reservationId, cost),
    );
    return { entryId: result.entryId, shortfall: result.shortfall };
  }

  /** Releases the hold (nothing charged) and commits the usage record saying why. */
  async release(held: HeldCall, record: CallRecord): Promise<void> {
    await this.persist(record, 'release', () =>
      this.ledger.voidHold({
        holdId: held.holdId,
        attach: () => [
          usageAttachment(record, {
            cost: new Decimal(0),
            shortfall: new Decimal(0),
            held,
            entryId: null,
          }),
        ],
      }),
    );
    await this.persist(record, 'spend-limit release', () =>
      this.releaseReservation(held.reservationId, new Decimal(0)),
    );
  }

  /** A call refused before any hold (402, 429): recorded, nothing charged. */
  async recordRefused(record: CallRecord): Promise<void> {
    const { row } = usageAttachment(record, {
      cost: new Decimal(0),
      shortfall: new Decimal(0),
      held: null,
      entryId: null,
    });
    await this.db
      .insertInto('usage_records')
      .values(row as never)
      .execute();
  }

  /**
   * Stops the background releases of lost holds (a shutdown, once its grace is over): each
   * gives up before its next try, logging its hold, which then expires.
   */
  stopReleases(): void {
    this.stopping.abort();
  }

  /**
   * Releases, in the background, a hold whose creation's answer was lost (see hold): once
   * the database answers, settles the lost write (so it can no longer commit late), then
   * voids the hold by its id: released if it had been created, "not found" if not (nothing
   * to do), and the spend-limit reservation with it. Tried again with backoff while the
   * database cannot be reached, until the hold's expiry (which releases it anyway) or
   * `stopReleases`. Never for a call that was forwarded: a call whose hold failed ends there.
   */
  private releaseLostHold(lost: LostHold): void {
    const job = this.releaseLost(lost).catch((error: unknown) => {
      this.countLost('failed');
      this.logger.error(
        { err: error, requestId: lost.requestId, holdId: lost.holdId },
        'could not release a hold whose creation was lost; it will expire',
      );
    });
    this.background.work?.track(job);
  }

  private async releaseLost(lost: LostHold): Promise<void> {
    const log = { requestId: lost.requestId, holdId: lost.holdId };
    const giveUpAt = lost.giveUpAtMs;
    for (let attempt = 1; ; attempt += 1) {
      if (this.stopping.signal.aborted) {
        this.countLost('stopped');
        this.logger.warn(log, 'shutdown: a hold whose creation was lost is left to expire');
        return;
      }
      try {
        const write = await this.ledger.settleLostWrite(lost.error);
        let result: LostHoldResult;
        try {
          await this.ledger.voidHold({ holdId: lost.holdId });
          result = 'released';
        } catch (error) {
          if (error instanceof HoldNotFoundError) result = 'never_created';
          else if (error instanceof HoldNotPendingError) result = 'expired';
          else throw error;
        }
        await this.releaseReservation(lost.reservationId, new Decimal(0));
        this.countLost(result);
        this.logger.info(
          { ...log, write, result, attempts: attempt },
          result === 'released'
            ? 'released a hold whose creation was lost (the call had answered 503)'
            : 'a hold whose creation was lost needs no release',
        );
        return;
      } catch (error) {
        if (!isDatabaseUnavailable(error)) throw error;
        const delayMs = Math.min(5000, 100 * 2 ** (attempt - 1));
        if (Date.now() + delayMs > giveUpAt) {
          this.countLost('gave_up');
          this.logger.warn(
            { ...log, err: error, attempts: attempt },
            'the database stayed unreachable until a lost hold expired; the expiry releases it',
          );
          return;
        }
        await abortableSleep(delayMs, this.stopping.signal);
      }
    }
  }

  private countLost(result: LostHoldResult | 'failed'): void {
    this.background.metrics?.lostHolds.inc({ result });
  }

  /** Runs a hold's resolution, again while the database is unreachable (it replays if it had committed). */
  private persist<T>(record: CallRecord, what: string, resolve: () => Promise<T>): Promise<T> {
    return retryWhileUnavailable(resolve, {
      deadlineMs: this.retryMs,
      onRetry: (error, attempt) =>
        this.logger.warn(
          { err: error, requestId: record.requestId, attempt },
          `the database is unreachable; trying the ${what} again`,
        ),
    });
  }

  /**
   * Reserves `maxCost` of the key's spend limit, or throws 402 `spend_limit_exceeded`. One
   * conditional update of the key's running total (concurrent calls cannot both slip under the
   * limit) with the reservation's row. Reservations of calls that never settled are released
   * first when they stand in the way (their overdue holds expired first, as the cron job does).
   */
  private async reserve(
    caller: ApiCaller,
    maxCost: Decimal,
    expiresAt: Date,
    holdId: string,
  ): Promise<string> {
    const id = randomUUID();
    const attempt = () =>
      sql<{ id: string }>`
        with k as (
          update api_keys set reserved_usd = reserved_usd + ${maxCost.toString()}::numeric
           where id = ${caller.keyId}
             and spent_usd + reserved_usd + ${maxCost.toString()}::numeric <= spend_limit_usd
          returning id)
        insert into api_key_reservations (id, key_id, amount, expires_at, hold_id)
        select ${id}::uuid, k.id, ${maxCost.toString()}::numeric, ${expiresAt}, ${holdId}::uuid from k
        returning id`.execute(this.db);
    if ((await attempt()).rows.length === 1) return id;
    if (await this.hasExpiredReservation(caller.keyId))
      await this.ledger.expireHolds({ limit: 1000 });
    if (
      (await releaseExpiredReservations(this.db, caller.keyId)) > 0 &&
      (await attempt()).rows.length === 1
    )
      return id;
    throw new AppError(
      'spend_limit_exceeded',
      `this key's spend limit of ${caller.spendLimitUsd} USD does not cover this call (up to ${maxCost.toString()} USD)`,
      { status: 402, type: 'insufficient_quota' },
    );
  }

  /** Whether the key has a reservation past its deadline not released yet. */
  private async hasExpiredReservation(keyId: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('api_key_reservations')
      .select('id')
      .where('key_id', '=', keyId)
      .where('released_at', 'is', null)
      .where('expires_at', '<', sql<Date>`now()`)
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** Releases a reservation, adding what the call cost to the key's spend; a repeat does nothing. */
  private async releaseReservation(reservationId: string | null, cost: Decimal): Promise<void> {
    if (reservationId === null) return;
    await sql`
      with r as (
        update api_key_reservations set released_at = now(), charged_usd = ${cost.toString()}::numeric
         where id = ${reservationId}::uuid and released_at is null
        returning key_id, amount)
      update api_keys k
         set reserved_usd = greatest(k.reserved_usd - r.amount, 0),
             spent_usd = k.spent_usd + ${cost.toString()}::numeric
        from r where k.id = r.key_id`.execute(this.db);
  }
}

/**
 * Releases spend-limit reservations past their deadline whose call's hold is no longer pending
 * (posted, voided or expired), for one key or all; returns how many. Such a call either never
 * settled (its process died first: its hold expired, nothing is charged) or settled without its
 * release getting through (the database went away after the settlement committed, or the
 * process died in between): it is charged what the usage rows naming it (committed with the
 * charge) say, so the key's spend stays true. A hold still pending may be settling right now:
 * its usage row is not visible until that commits, so its reservation waits for the hold's
 * expiry (the settlement and the expiry meet on the hold's row: one of them wins). Run by the
 * cron job that expires holds, after it has, and by a call that finds the limit taken.
 */
export async function releaseExpiredReservations(
  db: Kysely<Database>,
  keyId?: string,
): Promise<number> {
  const { rows } = await sql<{ released: string }>`
    with r as (
      update api_key_reservations r set released_at = now(),
             charged_usd = coalesce((select sum(u.cost_usd) from usage_records u
                                      where u.reservation_id = r.id), 0)
       where released_at is null and expires_at < now()
         and (r.hold_id is null or not exists (select 1 from ledger_holds h
                                                 where h.id = r.hold_id and h.status = 'pending'))
         ${keyId === undefined ? sql`` : sql`and key_id = ${keyId}::uuid`}
      returning key_id, amount, charged_usd),
    per_key as (select key_id, sum(amount) as amount, sum(charged_usd) as charged, count(*) as n
                  from r group by key_id),
    released_from_keys as (
      update api_keys k set reserved_usd = greatest(k.reserved_usd - p.amount, 0),
                            spent_usd = k.spent_usd + p.charged
        from per_key p where k.id = p.key_id)
    select coalesce(sum(n), 0)::text as released from per_key`.execute(db);
  return Number(rows[0]!.released);
}

function usageAttachment(
  record: CallRecord,
  money: { cost: Decimal; shortfall: Decimal; held: HeldCall | null; entryId: string | null },
): Attachment {
  return {
    table: 'usage_records',
    columns: USAGE_COLUMNS,
    row: {
      request_id: record.requestId,
      key_id: record.caller.keyId,
      user_id: record.caller.userId,
      endpoint: record.endpoint,
      model: record.model,
      provider: record.provider,
      price_id: record.priceId,
      stream: record.stream,
      prompt_tokens: record.usage.promptTokens.toString(),
      cached_tokens: record.usage.cachedTokens.toString(),
      cache_write_tokens: record.usage.cacheWriteTokens.toString(),
      completion_tokens: record.usage.completionTokens.toString(),
      reasoning_tokens: record.usage.reasoningTokens.toString(),
      cost_usd: money.cost.toString(),
      shortfall_usd: money.shortfall.toString(),
      estimated: record.estimated,
      hold_id: money.held?.holdId ?? null,
      entry_id: money.entryId,
      reservation_id: money.held?.reservationId ?? null,
      started_at: record.startedAt,
      first_byte_at: record.firstByteAt,
      finished_at: record.finishedAt,
      latency_ms: Math.max(0, Math.round(record.finishedAt.getTime() - record.startedAt.getTime())),
      http_status: record.httpStatus,
      outcome: record.outcome,
      client_ip: record.clientIp,
      user_agent: record.userAgent?.slice(0, 512) ?? null,
    },
  };
}

/**
 * Waits `ms`, or less if `signal` aborts; not at all if it already has (a stop that came
 * while a try was under way: an abort event does not fire again for a late listener).
 */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
