import { sql, type Kysely } from 'kysely';

/**
 * Admin support: replays of POSTs sent with an Idempotency-Key, and the append-only audit
 * log of every admin action (who, what, when, from where).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table http_idempotency (
      key text primary key check (length(key) between 1 and 255),
      method text not null,
      path text not null,
      request_hash text not null,
      -- null while the first request is still running
      status integer,
      response jsonb,
      created_at timestamptz not null default now()
    );

    create table audit_log (
      id bigint generated always as identity primary key,
      at timestamptz not null default now(),
      actor text not null,
      action text not null,
      target text,
      details jsonb not null default '{}',
      ip text,
      request_id text
    );
    create index audit_log_at on audit_log (at desc);
    create trigger audit_log_append_only before update or delete on audit_log
      for each statement execute function ledger_refuse_change();
    create trigger audit_log_no_truncate before truncate on audit_log
      for each statement execute function ledger_refuse_change();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table audit_log; drop table http_idempotency;`.execute(db);
}
