import { sql, type Kysely } from 'kysely';

/**
 * `rate_limit_take` finds or creates the key's bucket and locks it in one statement
 * (`on conflict do update`), so a bucket deleted between the two steps it used to take (an
 * insert that did nothing, then a select for update) can no longer leave it without a row.
 * Retention deletes buckets idle for an hour (full again by then: deleting one changes
 * nothing), which is what made that gap reachable. Same signature and results as before.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function rate_limit_take(
      p_key uuid, p_requests_per_minute double precision, p_tokens_per_minute double precision,
      p_need_requests double precision, p_need_tokens double precision,
      p_slice_requests double precision, p_slice_tokens double precision,
      out granted_requests double precision, out granted_tokens double precision,
      out left_requests double precision, out left_tokens double precision)
    language plpgsql as $$
    declare
      elapsed_minutes double precision;
      have_requests double precision;
      have_tokens double precision;
    begin
      insert into rate_limit_buckets as b (key_id, requests, tokens, updated_at)
      values (p_key, p_requests_per_minute, p_tokens_per_minute, clock_timestamp())
      on conflict (key_id) do update set key_id = b.key_id
      returning greatest(0, extract(epoch from clock_timestamp() - b.updated_at)) / 60, b.requests, b.tokens
        into elapsed_minutes, have_requests, have_tokens;
      have_requests := least(p_requests_per_minute, have_requests + elapsed_minutes * p_requests_per_minute);
      have_tokens := least(p_tokens_per_minute, have_tokens + elapsed_minutes * p_tokens_per_minute);
      if have_requests >= p_need_requests and have_tokens >= p_need_tokens then
        granted_requests := least(have_requests, greatest(p_slice_requests, p_need_requests));
        granted_tokens := least(have_tokens, greatest(p_slice_tokens, p_need_tokens));
      else
        granted_requests := 0;
        granted_tokens := 0;
      end if;
      left_requests := have_requests - granted_requests;
      left_tokens := have_tokens - granted_tokens;
      update rate_limit_buckets
         set requests = left_requests, tokens = left_tokens, updated_at = clock_timestamp()
       where key_id = p_key;
    end $$;
  `.execute(db);
}

/**
 * Nothing to undo: the function's signature and results are those 2026-11-27T0009_rate_limits
 * created, so it stays (undoing 0009 drops it with its table).
 */
export async function down(): Promise<void> {}
