import { sql, type Kysely } from 'kysely';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/schema.js';

export interface RunRetentionOptions {
  /** Rows changed per statement. Default 5000. */
  batchSize?: number;
  /** Statements per step and run at most; the next run continues. Default 1000. */
  maxBatches?: number;
}

export interface RunRetentionResult {
  /** Usage rows that finished before this lost client_ip and user_agent. */
  requestMetaCutoff: string;
  /** Usage rows that finished before this were rolled up into usage_daily and deleted. */
  usageLogCutoff: string;
  scrubbedRows: number;
  rolledUpRows: number;
  /** usage_daily rows created or added to. */
  aggregatesTouched: number;
  prunedLoginReplays: number;
  prunedSessions: number;
  /** Finished `Idempotency-Key` records (with the answers they replay) older than `requestMetaDays`. */
  prunedIdempotencyKeys: number;
  /** Spend-limit reservations released more than `requestMetaDays` ago. */
  prunedKeyReservations: number;
  /** Rate-limit buckets untouched for an hour (full again by then: deleting one changes nothing). */
  prunedRateLimitBuckets: number;
  /** False when a bound stopped the run early; the next run continues where it stopped. */
  complete: boolean;
  /**
   * The steps a bound stopped (none when `complete`): the table each left rows in, the rows it
   * changed this run and the most it may change in one run (batch size x batches).
   */
  stopped: RetentionStop[];
}

export interface RetentionStop {
  step: 'scrub' | 'roll-up';
  table: 'usage_records';
  rows: number;
  bound: number;
}

const DAY_MS = 86_400_000;
/** A rate-limit bucket refills in a minute; one idle this long is full and can go. */
const BUCKET_IDLE_MS = 3_600_000;

/**
 * The time a retention run acts at when no one chose it: the earlier of this process's clock
 * and the database's. What it scrubs and rolls up cannot come back, so a clock that runs ahead
 * (a VM whose clock was wrong at boot, before NTP set it) must not make rows look older than
 * they are. (An explicit `now`, `lingxi retention run --now`, is the operator's choice.)
 */
export async function retentionNow(db: Kysely<Database>): Promise<Date> {
  const { rows } = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(db);
  return new Date(Math.min(Date.now(), rows[0]!.now.getTime()));
}

/**
 * The retention policy (docs/privacy.md), as one job:
 * 1. usage rows older than `retention.requestMetaDays` lose client_ip and user_agent;
 * 2. usage rows older than `retention.usageLogDays` are summed into `usage_daily` (per UTC day
 *    of finished_at, user and model) and deleted, in one statement per batch, so the usage
 *    cost total (usage_records plus usage_daily, see chargedUsageTotal) never changes and law 7
 *    holds at every instant;
 * 3. Telegram login hashes past their freshness window, sessions that ended more than
 *    `requestMetaDays` ago, and finished Idempotency-Key records (and the answers they
 *    replay) and spend-limit reservations released before then are deleted, and rate-limit
 *    buckets untouched for an hour (full again, so nothing changes). What guards live state
 *    (login hashes, sessions, Idempotency-Key records, buckets) is judged by the earliest of
 *    `now`, this process's clock and the database's: a `now` in the future, or a process clock
 *    ahead of the database's, moves the usage cutoffs at most, and never ends a live session,
 *    forgets a login hash or Idempotency-Key record still inside its window (a retried request
 *    would run again) or refills a rate-limit bucket in use.
 * Ledger tables and usage_daily are never deleted from. Safe to run concurrently with itself
 * (rows are taken with SKIP LOCKED) and with the gateway writing new usage rows.
 */
export async function runRetention(
  db: Kysely<Database>,
  config: Pick<Config, 'retention'>,
  now: Date,
  options: RunRetentionOptions = {},
): Promise<RunRetentionResult> {
  const batchSize = options.batchSize ?? 5000;
  const maxBatches = options.maxBatches ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000)
    throw new RangeError('batchSize must be 1-100000');
  const metaCutoff = new Date(now.getTime() - config.retention.requestMetaDays * DAY_MS);
  const usageCutoff = new Date(now.getTime() - config.retention.usageLogDays * DAY_MS);
  // Live state is judged by the earliest of `now`, this process's clock and the database's,
  // which stamps buckets, login hashes and sessions: a process whose clock runs ahead (or a
  // `now` in the future) must not make a bucket in use look idle.
  const { rows: clock } = await sql<{ now: Date }>`select clock_timestamp() as now`.execute(db);
  const liveClock = new Date(Math.min(now.getTime(), Date.now(), clock[0]!.now.getTime()));
  const liveMetaCutoff = new Date(liveClock.getTime() - config.retention.requestMetaDays * DAY_MS);
  const stopped: RetentionStop[] = [];
  const bound = batchSize * maxBatches;

  let scrubbedRows = 0;
  for (let batch = 0; ; batch += 1) {
    if (batch === maxBatches) {
      stopped.push({ step: 'scrub', table: 'usage_records', rows: scrubbedRows, bound });
      break;
    }
    const { rows } = await sql<{ n: string }>`
      with scrubbed as (
        update usage_records set client_ip = null, user_agent = null
         where id in (select id from usage_records
                       where finished_at < ${metaCutoff} and (client_ip is not null or user_agent is not null)
                       order by id limit ${batchSize} for update skip locked)
        returning 1)
      select count(*) as n from scrubbed`.execute(db);
    const n = Number(rows[0]!.n);
    scrubbedRows += n;
    if (n < batchSize) break;
  }

  let rolledUpRows = 0;
  let aggregatesTouched = 0;
  for (let batch = 0; ; batch += 1) {
    if (batch === maxBatches) {
      stopped.push({ step: 'roll-up', table: 'usage_records', rows: rolledUpRows, bound });
      break;
    }
    const { rows } = await sql<{ moved: string; touched: string }>`
      with moved as (
        delete from usage_records
         where id in (select id from usage_records where finished_at < ${usageCutoff}
                       order by id limit ${batchSize} for update skip locked)
        returning finished_at, entry_id, user_id, model, outcome, prompt_tokens, cached_tokens,
                  cache_write_tokens, completion_tokens, reasoning_tokens, cost_usd, shortfall_usd
      ), per_outcome as (
        -- A charged call is filed under the UTC day of its ledger entry, the day its revenue
        -- keeps once the row is gone (a call finishing just before midnight settles after it).
        select (coalesce(e.created_at, m.finished_at) at time zone 'UTC')::date as day, m.user_id,
               m.model, m.outcome, count(*) as calls, sum(m.prompt_tokens) as prompt_tokens,
               sum(m.cached_tokens) as cached_tokens,
               sum(m.cache_write_tokens) as cache_write_tokens,
               sum(m.completion_tokens) as completion_tokens,
               sum(m.reasoning_tokens) as reasoning_tokens, sum(m.cost_usd) as cost_usd,
               sum(m.shortfall_usd) as shortfall_usd
          from moved m left join ledger_entries e on e.id = m.entry_id
         group by 1, 2, 3, 4
      ), per_day as (
        select day, user_id, model, sum(calls) as calls, sum(prompt_tokens) as prompt_tokens,
               sum(cached_tokens) as cached_tokens, sum(cache_write_tokens) as cache_write_tokens,
               sum(completion_tokens) as completion_tokens,
               sum(reasoning_tokens) as reasoning_tokens, sum(cost_usd) as cost_usd,
               sum(shortfall_usd) as shortfall_usd, jsonb_object_agg(outcome, calls) as outcomes
          from per_outcome group by 1, 2, 3
      ), touched as (
        insert into usage_daily (day, user_id, model, calls, prompt_tokens, cached_tokens,
                                 cache_write_tokens, completion_tokens, reasoning_tokens, cost_usd,
                                 shortfall_usd, outcomes)
        select day, user_id, model, calls, prompt_tokens, cached_tokens, cache_write_tokens,
               completion_tokens, reasoning_tokens, cost_usd, shortfall_usd, outcomes from per_day
        on conflict (day, user_id, model) do update set
          calls = usage_daily.calls + excluded.calls,
          prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
          cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens,
          cache_write_tokens = usage_daily.cache_write_tokens + excluded.cache_write_tokens,
          completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
          reasoning_tokens = usage_daily.reasoning_tokens + excluded.reasoning_tokens,
          cost_usd = usage_daily.cost_usd + excluded.cost_usd,
          shortfall_usd = usage_daily.shortfall_usd + excluded.shortfall_usd,
          outcomes = (select jsonb_object_agg(key, total) from (
                        select key, sum(value::bigint) as total
                          from (select * from jsonb_each_text(usage_daily.outcomes)
                                union all select * from jsonb_each_text(excluded.outcomes)) each_outcome
                         group by key) summed)
        returning 1
      )
      select (select count(*) from moved) as moved, (select count(*) from touched) as touched`.execute(
      db,
    );
    const moved = Number(rows[0]!.moved);
    rolledUpRows += moved;
    aggregatesTouched += Number(rows[0]!.touched);
    if (moved < batchSize) break;
  }

  const replays = await db
    .deleteFrom('telegram_login_replays')
    .where('expires_at', '<', liveClock)
    .executeTakeFirst();
  const sessions = await db
    .deleteFrom('sessions')
    .where(sql<boolean>`least(revoked_at, expires_at) < ${liveMetaCutoff}`)
    .executeTakeFirst();
  // Answered keys, and claims whose request died unanswered: a running request refreshes its
  // claim every third of http.idempotencyLeaseMs (at most an hour), so one this old is abandoned.
  const idempotencyKeys = await db
    .deleteFrom('http_idempotency')
    .where('created_at', '<', liveMetaCutoff)
    .executeTakeFirst();
  const reservations = await db
    .deleteFrom('api_key_reservations')
    .where('released_at', '<', metaCutoff)
    .executeTakeFirst();
  const buckets = await sql`delete from rate_limit_buckets
    where updated_at < ${new Date(liveClock.getTime() - BUCKET_IDLE_MS)}`.execute(db);

  return {
    requestMetaCutoff: metaCutoff.toISOString(),
    usageLogCutoff: usageCutoff.toISOString(),
    scrubbedRows,
    rolledUpRows,
    aggregatesTouched,
    prunedLoginReplays: Number(replays.numDeletedRows),
    prunedSessions: Number(sessions.numDeletedRows),
    prunedIdempotencyKeys: Number(idempotencyKeys.numDeletedRows),
    prunedKeyReservations: Number(reservations.numDeletedRows),
    prunedRateLimitBuckets: Number(buckets.numAffectedRows ?? 0),
    complete: stopped.length === 0,
    stopped,
  };
}
