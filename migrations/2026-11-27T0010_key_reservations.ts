import { sql, type Kysely } from 'kysely';

/**
 * A key's spend limit, reserved per call. `api_keys.reserved_usd` stays the running total the
 * admission check compares against (one conditional update, safe under concurrency); each
 * reservation is now also a row, so that releasing it is a no-op the second time (it can be
 * repeated after a database blip) and a reservation whose call never settled (its process
 * died) is released once its hold could have expired, instead of keeping part of the limit
 * for ever. Totals from before this migration have no rows to release them: they restart at 0.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table api_key_reservations (
      id uuid primary key,
      key_id uuid not null references api_keys (id),
      amount numeric not null check (amount > 0),
      expires_at timestamptz not null,
      created_at timestamptz not null default now(),
      released_at timestamptz,
      charged_usd numeric check (charged_usd >= 0),
      check ((released_at is null) = (charged_usd is null))
    );
    create index api_key_reservations_open on api_key_reservations (expires_at, key_id)
      where released_at is null;
    update api_keys set reserved_usd = 0 where reserved_usd <> 0;
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table api_key_reservations;`.execute(db);
}
