import { sql, type Kysely } from 'kysely';

/**
 * Per-key rate limits shared by every gateway process: one token bucket per API key
 * (requests and tokens per minute, refilled continuously by the database clock). Processes
 * take slices of a bucket with `rate_limit_take` and serve calls from their slice, so a key
 * gets its configured rate however many processes serve it. Unlogged: a bucket is not money;
 * after a server crash the buckets start full again.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create unlogged table rate_limit_buckets (
      key_id uuid primary key,
      requests double precision not null,
      tokens double precision not null,
      updated_at timestamptz not null
    );

    -- Refills the key's bucket up to the limits for the time since its last take, then takes
    -- a slice: at least what is needed (p_need_*) and up to p_slice_*, or nothing when the
    -- bucket cannot cover the need. Returns what was granted and what is left.
    create function rate_limit_take(
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
      insert into rate_limit_buckets (key_id, requests, tokens, updated_at)
      values (p_key, p_requests_per_minute, p_tokens_per_minute, clock_timestamp())
      on conflict (key_id) do nothing;
      select greatest(0, extract(epoch from clock_timestamp() - b.updated_at)) / 60, b.requests, b.tokens
        into elapsed_minutes, have_requests, have_tokens
        from rate_limit_buckets b where b.key_id = p_key for update;
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

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function rate_limit_take; drop table rate_limit_buckets;`.execute(db);
}
