import { sql, type Kysely } from 'kysely';

/** Reconciliation runs and what each found; both append-only once a run has finished. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table reconciliation_runs (
      id bigint generated always as identity primary key,
      started_at timestamptz not null default now(),
      finished_at timestamptz,
      trigger text not null,
      status text not null check (status in ('running', 'clean', 'findings', 'failed')),
      -- Per network: the block the chain was compared at.
      blocks jsonb not null default '{}',
      stats jsonb not null default '{}',
      error text
    );

    create table reconciliation_findings (
      id bigint generated always as identity primary key,
      run_id bigint not null references reconciliation_runs (id),
      severity text not null check (severity in ('error', 'warning', 'info')),
      kind text not null,
      network text,
      asset text,
      address text,
      account text,
      currency text,
      expected text,
      actual text,
      difference text,
      details jsonb not null default '{}'
    );
    create index reconciliation_findings_run on reconciliation_findings (run_id);
    create trigger reconciliation_findings_append_only before update or delete on reconciliation_findings
      for each statement execute function ledger_refuse_change();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table reconciliation_findings; drop table reconciliation_runs;`.execute(db);
}
