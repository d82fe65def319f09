import { sql, type Kysely } from 'kysely';

/** The people who hold prepaid balances. Sign-in details grow in later migrations. */
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create table users (
      id bigint generated always as identity primary key,
      telegram_id bigint unique,
      username text,
      status text not null default 'active' check (status in ('active', 'suspended', 'erased')),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
  `.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop table users`.execute(db);
}
