import { sql, type Kysely } from 'kysely';

/**
 * Accounts: what Telegram tells us about a user, sign-in sessions (only a hash of the token
 * is stored), Telegram login payloads already used (so a payload signs in once), suspension
 * and erasure marks on users, and the daily usage aggregates that usage rows are rolled up
 * into once they pass the retention period.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table users
      add column first_name text,
      add column last_name text,
      add column photo_url text,
      add column last_login_at timestamptz,
      add column suspended_at timestamptz,
      add column suspension_reason text,
      add column erased_at timestamptz,
      add constraint users_erased_has_no_identity check (
        status <> 'erased' or (telegram_id is null and username is null and first_name is null
          and last_name is null and photo_url is null and erased_at is not null)
      );
    create index users_username on users (lower(username)) where username is not null;

    create table sessions (
      id uuid primary key,
      user_id bigint not null references users (id),
      -- sha256 of the whole token, hex; the token itself is shown once and never stored.
      token_hash text not null unique,
      method text not null check (method in ('telegram', 'dev')),
      created_at timestamptz not null default now(),
      expires_at timestamptz not null,
      last_used_at timestamptz,
      revoked_at timestamptz,
      check (expires_at > created_at)
    );
    create index sessions_user on sessions (user_id, created_at desc);
    create index sessions_expires on sessions (expires_at);

    -- The hash of every Telegram login payload that signed someone in, until the payload
    -- would be too old to accept anyway.
    create table telegram_login_replays (
      payload_hash text primary key,
      expires_at timestamptz not null
    );
    create index telegram_login_replays_expires on telegram_login_replays (expires_at);

    -- Usage rows past retention.usageLogDays, summed per UTC day (of finished_at), user and
    -- model. Billing records: kept, and their cost_usd counts towards law 7 like usage rows.
    create table usage_daily (
      day date not null,
      user_id bigint not null references users (id),
      model text not null,
      calls bigint not null check (calls > 0),
      prompt_tokens numeric not null default 0,
      cached_tokens numeric not null default 0,
      completion_tokens numeric not null default 0,
      reasoning_tokens numeric not null default 0,
      cost_usd numeric not null default 0 check (cost_usd >= 0),
      shortfall_usd numeric not null default 0 check (shortfall_usd >= 0),
      -- Calls per outcome: {"ok": 12, "upstream_error": 1}.
      outcomes jsonb not null default '{}',
      primary key (day, user_id, model)
    );
    create index usage_daily_user on usage_daily (user_id, day desc);
    create trigger usage_daily_no_delete before delete or truncate on usage_daily
      for each statement execute function ledger_refuse_change();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    drop table usage_daily;
    drop table telegram_login_replays;
    drop table sessions;
    drop index users_username;
    alter table users
      drop constraint users_erased_has_no_identity,
      drop column first_name, drop column last_name, drop column photo_url,
      drop column last_login_at, drop column suspended_at, drop column suspension_reason,
      drop column erased_at;
  `.execute(db);
}
