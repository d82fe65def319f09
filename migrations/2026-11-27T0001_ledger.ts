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
      check (debit_account_id <> credit_account_id),
      check ((status = 'pending') = (resolved_at is null)),
      check ((status = 'posted') = (posted_amount is not null))
    );
    create index ledger_holds_pending_deadline on ledger_holds (expires_at) where status = 'pending';

    create table ledger_entries (
      id uuid primary key,
      kind text not null,
      description text not null default '',
      metadata jsonb not null default '{}',
      reverses_entry_id uuid,
      hold_id uuid,
      effective_at timestamptz not null default now(),
      created_at timestamptz not null default now(),
      -- The writing transaction, so that sealing can take entries in commit order.
      tx_id xid8 not null default pg_current_xact_id(),
      check (reverses_entry_id is null or reverses_entry_id <> id)
    );
    create index ledger_entries_created_at on ledger_entries (created_at, id);
    create index ledger_entries_tx_id on ledger_entries (tx_id);
    -- An entry is reversed at most once; a hold is posted by at most one entry.
    create unique index ledger_entries_reverses on ledger_entries (reverses_entry_id) where reverses_entry_id is not null;
    create unique index ledger_entries_hold on ledger_entries (hold_id) where hold_id is not null;

    create table ledger_postings (
      entry_id uuid not null,
      -- Position of the posting within its entry: 1, 2, 3...
      line smallint not null check (line > 0),
      account_id bigint not null,
      currency text not null,
      amount numeric not null check (amount <> 0),
      -- 1, 2, 3... per account, in the order the account's row lock granted them.
      account_version bigint not null check (account_version > 0),
      -- Debits minus credits of the account after this posting.
      balance_after numeric not null,
      primary key (entry_id, line),
      unique (account_id, account_version)
    );

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

    -- What foreign keys would check, once per statement over its new rows and without a row
    -- lock per reference (which cost a third of the write path): every posting names an
    -- existing entry and an account of its currency, and every entry's postings balance per
    -- currency. Each reference is one index lookup (a scalar subquery, never turned into a
    -- join over the whole table). Accounts and entries are never deleted (see the triggers
    -- below), so what was valid stays valid.
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
      select p.entry_id, p.account_id, p.currency into bad from new_postings p
       where (select count(*) from ledger_accounts a where a.id = p.account_id and a.currency = p.currency) = 0
          or (select count(*) from ledger_entries e where e.id = p.entry_id) = 0
       limit 1;
      if found then
        raise exception 'a posting of entry % names no entry, or no account % in %', bad.entry_id, bad.account_id, bad.currency
          using errcode = 'foreign_key_violation';
      end if;
      return null;
    end $$;
    create trigger ledger_postings_balance after insert on ledger_postings
      referencing new table as new_postings
      for each statement execute function ledger_check_postings_balance();

    -- Each new entry has at least two postings and balances as a whole. An entry and its
    -- postings are therefore written by one statement (the ledger writes a whole batch as
    -- one statement of data-modifying CTEs, and this trigger sees all of it).
    create function ledger_check_entries_complete() returns trigger language plpgsql as $$
    declare
      bad record;
    begin
      -- One index lookup per new entry (a join here would be planned as a scan of all postings).
      -- Balance per currency is checked on the postings themselves (ledger_postings_balance).
      select e.id, (select count(*) from ledger_postings p where p.entry_id = e.id) as postings into bad
        from new_entries e
       where (select count(*) from ledger_postings p where p.entry_id = e.id) < 2
       limit 1;
      if found then
        raise exception 'entry % has % postings; an entry needs at least two, written with it', bad.id, bad.postings
          using errcode = 'check_violation';
      end if;
      select e.id into bad from new_entries e
       where (e.hold_id is not null and (select count(*) from ledger_holds h where h.id = e.hold_id) = 0)
          or (e.reverses_entry_id is not null and (select count(*) from ledger_entries r where r.id = e.reverses_entry_id) = 0)
       limit 1;
      if found then
        raise exception 'entry % names a hold or an entry that does not exist', bad.id using errcode = 'foreign_key_violation';
      end if;
      return null;
    end $$;
    create trigger ledger_entries_complete after insert on ledger_entries
      referencing new table as new_entries
      for each statement execute function ledger_check_entries_complete();

    -- Adds a batch's changes to account totals and returns the totals after them. Rows are
    -- locked first, in id order (so concurrent batches never deadlock on them), then updated
    -- in one statement. Changes are relative: a batch planned on totals that have moved since
    -- is still right, except where it lowers a no-overdraft account, and there
    -- ledger_accounts_no_negative refuses the whole statement if the account would go below
    -- zero (the batch then runs again on fresh totals).
    create function ledger_apply_account_deltas(
      p_ids bigint[], p_debits numeric[], p_credits numeric[], p_debits_pending numeric[],
      p_credits_pending numeric[], p_postings bigint[])
    returns table (account_id bigint, version bigint, balance numeric, debits_posted numeric, credits_posted numeric,
      debits_pending numeric, credits_pending numeric) language plpgsql as $$
    #variable_conflict use_column
    begin
      perform 1 from ledger_accounts a where a.id = any(p_ids) order by a.id for no key update;
      return query
        update ledger_accounts a
           set debits_posted = a.debits_posted + t.d,
               credits_posted = a.credits_posted + t.c,
               debits_pending = a.debits_pending + t.dp,
               credits_pending = a.credits_pending + t.cp,
               version = a.version + t.n
          from unnest(p_ids, p_debits, p_credits, p_debits_pending, p_credits_pending, p_postings) as t(id, d, c, dp, cp, n)
         where a.id = t.id
        returning a.id, a.version, a.debits_posted - a.credits_posted, a.debits_posted, a.credits_posted,
          a.debits_pending, a.credits_pending;
      if not found then
        raise exception 'no account of the batch exists' using errcode = 'foreign_key_violation';
      end if;
    end $$;

    create function ledger_conflict(what text) returns integer language plpgsql as $$
    begin
      raise exception '% changed since the batch read it', what using errcode = 'serialization_failure';
    end $$;

    create function ledger_check_hold_references() returns trigger language plpgsql as $$
    declare
      bad record;
    begin
      select h.id into bad from new_holds h
       where (select count(*) from ledger_accounts a where a.id = h.debit_account_id and a.currency = h.currency) = 0
          or (select count(*) from ledger_accounts a where a.id = h.credit_account_id and a.currency = h.currency) = 0
          or (h.entry_id is not null and (select count(*) from ledger_entries e where e.id = h.entry_id) = 0)
       limit 1;
      if found then
        raise exception 'hold % names an account not in its currency, or an entry that does not exist', bad.id
          using errcode = 'foreign_key_violation';
      end if;
      return null;
    end $$;
    create trigger ledger_holds_references_insert after insert on ledger_holds
      referencing new table as new_holds for each statement execute function ledger_check_hold_references();
    create trigger ledger_holds_references_update after update on ledger_holds
      referencing new table as new_holds for each statement execute function ledger_check_hold_references();

    -- Accounts are referenced by postings and holds: never deleted.
    create trigger ledger_accounts_no_delete before delete or truncate on ledger_accounts
      for each statement execute function ledger_refuse_change();

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
    drop table ledger_entries;
    drop table ledger_holds;
    drop table ledger_idempotency;
    drop table ledger_accounts;
    drop table ledger_currencies;
    drop function ledger_refuse_change, ledger_check_postings_balance, ledger_check_entries_complete, ledger_check_hold_transition,
      ledger_apply_account_deltas, ledger_conflict, ledger_check_hold_references;
  `.execute(db);
}
