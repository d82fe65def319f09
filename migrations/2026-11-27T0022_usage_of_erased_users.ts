import { sql, type Kysely } from 'kysely';

/**
 * A usage row written for an erased user keeps no client IP or user agent. Erasure scrubs the
 * rows it finds; a call authorised just before it (the key still valid) settles, and writes its
 * row, after it. The trigger reads the user's row FOR KEY SHARE, the lock the row's foreign key
 * check takes anyway: it waits for an erasure that holds the row (FOR UPDATE) and then sees it
 * erased, and an erasure that comes later waits for this row's commit and then scrubs it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create function usage_records_of_erased_users() returns trigger
    language plpgsql as $$
    declare
      user_status text;
    begin
      -- Locked whatever its status: a filter on the status would be read before the wait.
      select u.status into user_status from users u where u.id = new.user_id for key share;
      if user_status = 'erased' then
        new.client_ip := null;
        new.user_agent := null;
      end if;
      return new;
    end $$;
    create trigger usage_records_of_erased_users before insert on usage_records
      for each row when (new.client_ip is not null or new.user_agent is not null)
      execute function usage_records_of_erased_users();
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    drop trigger usage_records_of_erased_users on usage_records;
    drop function usage_records_of_erased_users();
  `.execute(db);
}
