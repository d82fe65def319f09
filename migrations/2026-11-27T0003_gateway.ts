import { sql, type Kysely } from 'kysely';

/**
 * The metering gateway: API keys (only their hash is stored), versioned model prices, and
 * one usage record per API call. Usage records hold token counts and money, never prompts
 * or completions.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table api_keys (
      id uuid primary key,
      user_id bigint not null references users (id),
      name text not null default '',
      -- The first characters of the key, to recognise it in lists; never enough to use it.
      prefix text not null,
      -- sha256 of the whole key, hex.
      key_hash text not null unique,
      spend_limit_usd numeric check (spend_limit_usd > 0),
      spent_usd numeric not null default 0,
      reserved_usd numeric not null default 0 check (reserved_usd >= 0),
      allowed_models text[],
      created_at timestamptz not null default now(),
      last_used_at timestamptz,
      revoked_at timestamptz
    );
    create index api_keys_user on api_keys (user_id, created_at);

    create table model_prices (
      id bigint generated always as identity primary key,
      model_id text not null,
      provider text not null,
      upstream_model text not null,
      input_per_1m numeric not null check (input_per_1m >= 0),
      cached_input_per_1m numeric not null check (cached_input_per_1m >= 0),
      output_per_1m numeric not null check (output_per_1m >= 0),
      reasoning_per_1m numeric not null check (reasoning_per_1m >= 0),
      effective_from timestamptz not null default now()
    );
    create index model_prices_model on model_prices (model_id, id desc);
    create trigger model_prices_append_only before update or delete on model_prices
      for each statement execute function ledger_refuse_change();

    create table usage_records (
      id bigint generated always as identity primary key,
      request_id text not null unique,
      key_id uuid references api_keys (id),
      user_id bigint not null references users (id),
      endpoint text not null,
      model text not null,
      provider text,
      price_id bigint references model_prices (id),
      stream boolean not null default false,
      prompt_tokens bigint not null default 0,
      cached_tokens bigint not null default 0,
      completion_tokens bigint not null default 0,
      reasoning_tokens bigint not null default 0,
      -- Exactly what was posted to revenue for this call (0 when nothing was charged).
      cost_usd numeric not null default 0 check (cost_usd >= 0),
      -- Part of the cost the balance could not cover, booked as a receivable.
      shortfall_usd numeric not null default 0 check (shortfall_usd >= 0),
      estimated boolean not null default false,
      hold_id uuid,
      entry_id uuid,
      started_at timestamptz not null,
      first_byte_at timestamptz,
      finished_at timestamptz not null,
      latency_ms integer not null,
      http_status integer not null,
      outcome text not null,
      client_ip text,
      user_agent text
    );
    create index usage_records_user_time on usage_records (user_id, started_at desc, id desc);
    create index usage_records_finished on usage_records (finished_at);
    create index usage_records_entry on usage_records (entry_id) where entry_id is not null;
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table usage_records; drop table model_prices; drop table api_keys;`.execute(db);
}
