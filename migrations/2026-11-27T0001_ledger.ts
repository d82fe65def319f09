import { sql, type Kysely } from 'kysely';

/**
 * The double-entry ledger. The database itself enforces what must never break:
 * entries and postings are append-only, every entry balances per currency and has at
 * least two postings, no-overdraft accounts never go below zero, holds move only from
 * pending to a final state.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table ledger_currencies (
      code text primary key check (code ~ '^[A-Z][A-Z0-9-]{1,15}$'),
      scale integer not null check (scale between 0 and 36)
    );

    create table ledger_accounts (
      id bigint generated always as identity primary key,
      code text not null unique,
      type text not null check (type in ('asset', 'liability', 'equity', 'revenue', 'expense')),
      currency text not null references ledger_currencies (code),
      no_negative boolean not null default false,
      debits_posted numeric not null default 0 check (debits_posted >= 0),
      credits_posted numeric not null default 0 check (credits_posted >= 0),
      debits_pending numeric not null default 0 check (debits_pending >= 0),
      credits_pending numeric not null default 0 check (credits_pending >= 0),
      version bigint not null default 0,
      created_at timestamptz not null default now(),
      unique (id, currency),
      constraint ledger_accounts_no_negative check (
        not no_negative or (
          case when type in ('asset', 'expense')
            then credits_posted + credits_pending <= debits_posted
            else debits_posted + debits_pending <= credits_posted
          end
        )
      )
    );

    create table ledger_holds (
      id uuid primary key,
      debit_account_id bigint not null,
      credit_account_id bigint not null,
      currency text not null,
      amount numeric not null check (amount > 0),
      status text not null default 'pending' check (status in ('pending', 'posted', 'voided', 'expired')),
      expires_at timestamptz,
      metadata jsonb not null default '{}',
      posted_amount numeric check (posted_amount >= 0),
      shortfall numeric check (shortfall >= 0),
      entry_id uuid,
      created_at timestamptz not null default now(),
      resolved_at timestamptz,
      foreign key (debit_account_id, currency) references ledger_accounts (id, currency),
      foreign key (credit_account_id, currency) references ledger_accounts (id, currency),
      check (debit_account_id <> credit_account_id),
      check ((status = 'pending') = (resolved_at is null)),
      check ((status = 'posted') = (posted_amount is not null))
    );
    create index ledger_holds_pending_deadline on ledger_holds (expires_at) where status = 'pending';
    create index ledger_holds_debit_account on ledger_holds (debit_account_id, created_at);

    create table ledger_entries (
      id uuid primary key,
      kind text not null,
      description text not null default '',
      metadata jsonb not null default '{}',
      reverses_entry_id uuid unique references ledger_entries (id),
      hold_id uuid unique references ledger_holds (id),
      effective_at timestamptz not null default now(),
      created_at timestamptz not null default now(),
      -- The writing transaction, so that sealing can take entries in commit order.
      tx_id xid8 not null default pg_current_xact_id(),
      check (reverses_entry_id is null or reverses_entry_id <> id)
    );
    create index ledger_entries_created_at on ledger_entries (created_at, id);
    create index ledger_entries_tx_id on ledger_entries (tx_id);

    alter table ledger_holds add foreign key (entry_id) references ledger_entries (id);

    create table ledger_postings (
      id bigint generated always as identity primary key,
      entry_id uuid not null references ledger_entries (id),
      account_id bigint not null,
      currency text not null,
      amount numeric not null check (amount <> 0),
      -- 1, 2, 3... per account, in the order the account's row lock granted them.
      account_version bigint not null check (account_version > 0),
      -- Debits minus credits of the account after this posting.
      balance_after numeric not null,
      foreign key (account_id, currency) references ledger_accounts (id, currency),
      unique (account_id, account_version)
    );
    create index ledger_postings_entry on ledger_postings (entry_id);

    create table ledger_idempotency (
      key text primary key check (length(key) between 1 and 255),
      request_hash text not null,
      result jsonb not null,
      created_at timestamptz not null default now()
    );

    create function ledger_refuse_change() returns trigger language plpgsql as $$
    begin
      raise exception 'ledger table % is append-only: % refused', tg_table_name, tg_op
        using errcode = 'raise_exception', hint = 'record a reversal entry instead';
    end $$;

    create trigger ledger_entries_append_only before update or delete on ledger_entries
      for each statement execute function ledger_refuse_change();
    create trigger ledger_entries_no_truncate before truncate on ledger_entries
      for each statement execute function ledger_refuse_change();
    create trigger ledger_postings_append_only before update or delete on ledger_postings
      for each statement execute function ledger_refuse_change();
    create trigger ledger_postings_no_truncate before truncate on ledger_postings
      for each statement execute function ledger_refuse_change();
    create trigger ledger_idempotency_append_only before update or delete on ledger_idempotency
      for each statement execute function ledger_refuse_change();
    create trigger ledger_holds_no_delete before delete or truncate on ledger_holds
      for each statement execute function ledger_refuse_change();

    -- Every statement's new postings balance per entry and currency. Checked once per
    -- statement over its transition table, so a batch of thousands costs one query.
    create function ledger_check_postings_balance() returns trigger language plpgsql as $$
    declare
      bad record;
    begin
      select entry_id, currency, sum(amount) as imbalance into bad
        from new_postings group by entry_id, currency having sum(amount) <> 0 limit 1;
      if found then
        raise exception 'entry % does not balance in %: debits minus credits is %',
          bad.entry_id, bad.currency, bad.imbalance using errcode = 'check_violation';
      end if;
      return null;
    end $$;
    create trigger ledger_postings_balance after insert on ledger_postings
      referencing new table as new_postings
      for each statement execute function ledger_check_postings_balance();

    -- At commit, each new entry has at least two postings and balances as a whole.
    create function ledger_check_entry_complete() returns trigger language plpgsql as $$
    declare
      posting_count integer;
      bad_currency text;
    begin
      select count(*) into posting_count from ledger_postings where entry_id = new.id;
      if posting_count < 2 then
        raise exception 'entry % has % postings; an entry needs at least two', new.id, posting_count
          using errcode = 'check_violation';
      end if;
      select currency into bad_currency from ledger_postings where entry_id = new.id
        group by currency having sum(amount) <> 0 limit 1;
      if found then
        raise exception 'entry % does not balance in %', new.id, bad_currency using errcode = 'check_violation';
      end if;
      return null;
    end $$;
    create constraint trigger ledger_entries_complete after insert on ledger_entries
      deferrable initially deferred for each row execute function ledger_check_entry_complete();

    -- A hold changes once: from pending to posted, voided or expired. Nothing else moves.
    create function ledger_check_hold_transition() returns trigger language plpgsql as $$
    begin
      raise exception 'hold %: only a pending hold may be resolved, once, without changing its terms', old.id
        using errcode = 'check_violation';
    end $$;
    create trigger ledger_holds_transition before update on ledger_holds
      for each row when (
        old.status <> 'pending' or new.status = 'pending'
        or new.amount <> old.amount or new.debit_account_id <> old.debit_account_id
        or new.credit_account_id <> old.credit_account_id or new.currency <> old.currency
        or new.id <> old.id or new.created_at <> old.created_at
        or new.expires_at is distinct from old.expires_at
      ) execute function ledger_check_hold_transition();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    drop table ledger_postings;
    alter table ledger_holds drop constraint ledger_holds_entry_id_fkey;
    drop table ledger_entries;
    drop table ledger_holds;
    drop table ledger_idempotency;
    drop table ledger_accounts;
    drop table ledger_currencies;
    drop function ledger_refuse_change, ledger_check_postings_balance, ledger_check_entry_complete, ledger_check_hold_transition;
  `.execute(db);
}
