import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { Kysely, PostgresDialect } from 'kysely';
import { startEmbeddedPostgres, type EmbeddedServer } from '../../src/db/embedded.js';
import { migrateToLatest } from '../../src/db/migrate.js';

/**
 * One PostgreSQL server for the whole run: `DATABASE_URL` when set (CI points it at the
 * local server), otherwise the embedded one. The migrations run once into a template
 * database; each test file then gets a fresh copy of it (see test/support/db.ts).
 */
export const TEMPLATE_DATABASE = 'lingxi_test_template';

let embedded: EmbeddedServer | null = null;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let adminUrl = process.env['DATABASE_URL'];
  if (!adminUrl) {
    embedded = await startEmbeddedPostgres({
      dir: 'data/test-pg',
      port: 54330,
      database: 'postgres',
    });
    adminUrl = embedded.adminUrl;
  }
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(
    `select pg_terminate_backend(pid) from pg_stat_activity where datname like 'lingxi_t_%' or datname = $1`,
    [TEMPLATE_DATABASE],
  );
  const stale = await admin.query<{ datname: string }>(
    `select datname from pg_database where datname like 'lingxi_t_%' or datname = $1`,
    [TEMPLATE_DATABASE],
  );
  for (const row of stale.rows)
    await admin.query(`drop database if exists ${pg.escapeIdentifier(row.datname)}`);
  await admin.query(`create database ${TEMPLATE_DATABASE}`);
  await admin.end();

  const templateUrl = withDatabase(adminUrl, TEMPLATE_DATABASE);
  const pool = new pg.Pool({ connectionString: templateUrl, max: 1 });
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  await migrateToLatest(db);
  await db.destroy();

  project.provide('pgAdminUrl', adminUrl);
  return async () => {
    await embedded?.stop();
  };
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
  }
}
