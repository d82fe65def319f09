import { sql, type Kysely } from 'kysely';

/**
 * The same reference checks as the ledger migration's, with fewer index lookups per batch
 * (they were a fifth of PostgreSQL's time per hold+post pair in bench:ledger):
 *
 * - each distinct entry, and each distinct (account, currency), of a statement's new postings
 *   is looked up once, not once per posting (a batch's postings name the revenue account, say,
 *   once per call);
 * - the same for the accounts of new holds;
 * - an UPDATE of holds checks only the entry a hold now names: its accounts and currency were
 *   checked when it was inserted and cannot change (`ledger_holds_transition` refuses it).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function ledger_check_postings_balance() returns trigger language plpgsql as $$
    declare
      bad record;
    begin
      select entry_id, currency, sum(amount) as imbalance into bad
        from new_postings group by entry_id, currency having sum(amount) <> 0 limit 1;
      if found then
        raise exception 'entry % does not balance in %: debits minus credits is %',
          bad.entry_id, bad.currency, bad.imbalance using errcode = 'check_violation';
      end if;
      select p.entry_id into bad
        from (select distinct entry_id from new_postings) p
       where (select count(*) from ledger_entries e where e.id = p.entry_id) = 0
       limit 1;
      if found then
        raise exception 'a posting names entry %, which does not exist', bad.entry_id
          using errcode = 'foreign_key_violation';
      end if;
      select p.account_id, p.currency into bad
        from (select distinct account_id, currency from new_postings) p
       where (select count(*) from ledger_accounts a where a.id = p.account_id and a.currency = p.currency) = 0
       limit 1;
      if found then
        raise exception 'a posting names no account % in %', bad.account_id, bad.currency
          using errcode = 'foreign_key_violation';
      end if;
      return null;
    end $$;

    create or replace function ledger_check_hold_references() returns trigger language plpgsql as $$
    declare
      bad record;
    begin
      if tg_op = 'INSERT' then
        select a.account_id, a.currency into bad
          from (select debit_account_id as account_id, currency from new_holds
                union select credit_account_id, currency from new_holds) a
         where (select count(*) from ledger_accounts x where x.id = a.account_id and x.currency = a.currency) = 0
         limit 1;
        if found then
          raise exception 'a hold names no account % in %', bad.account_id, bad.currency
            using errcode = 'foreign_key_violation';
        end if;
      end if;
      select h.id into bad from new_holds h
       where h.entry_id is not null and (select count(*) from ledger_entries e where e.id = h.entry_id) = 0
       limit 1;
      if found then
        raise exception 'hold % names an entry that does not exist', bad.id
          using errcode = 'foreign_key_violation';
      end if;
      return null;
    end $$;
  `.execute(db);
}

/** Puts back the ledger migration's per-row versions. */
export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace function ledger_check_postings_balance() returns trigger language plpgsql as $$
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

    create or replace function ledger_check_hold_references() returns trigger language plpgsql as $$
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
  `.execute(db);
}
