import { sql, type Kysely } from 'kysely';

/**
 * Reconciliation alerts and acknowledgements. `alert_state` of a finished run is what the
 * alert webhook has been told is open after that run (error findings by fingerprint): the next
 * run posts only what is new, changed or resolved against it, and a post that failed leaves it
 * as it was, so the next run posts the same changes again. `alert_status` says what the run did
 * (`sent`, `unchanged`, `failed`, `off`), `alert_error` why a post failed.
 * `reconciliation_acknowledgements`: findings an operator has acknowledged (a deposit reversed
 * by a reorg, an outflow explained), by fingerprint; later runs no longer report them.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    alter table reconciliation_runs
      add column alert_state jsonb,
      add column alert_status text,
      add column alert_error text;
    create table reconciliation_acknowledgements (
      fingerprint text primary key,
      kind text not null,
      finding jsonb not null,
      reason text not null,
      actor text not null,
      run_id bigint not null references reconciliation_runs (id),
      created_at timestamptz not null default now()
    );
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    drop table reconciliation_acknowledgements;
    alter table reconciliation_runs
      drop column alert_state,
      drop column alert_status,
      drop column alert_error;
  `.execute(db);
}
