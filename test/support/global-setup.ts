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
const RUN = `${Math.floor(Date.now() / 1000)}_${process.pid}`;
/** Databases are named lingxi_t_<epoch seconds>_...: runs may overlap, so only old ones are swept. */
export const TEMPLATE_DATABASE = `lingxi_t_${RUN}_template`;
const STALE_AFTER_S = 3 * 3600;

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
  const { rows } = await admin.query<{ datname: string }>(
    `select datname from pg_database where datname like 'lingxi\\_t\\_%'`,
  );
  const cutoff = Date.now() / 1000 - STALE_AFTER_S;
  for (const { datname } of rows) {
    const started = Number(/^lingxi_t_(\d+)_/.exec(datname)?.[1] ?? 0);
    if (started < cutoff)
      await admin.query(`drop database if exists ${pg.escapeIdentifier(datname)} with (force)`);
  }
  await admin.query(`create database ${TEMPLATE_DATABASE}`);
  await admin.end();

  const templateUrl = withDatabase(adminUrl, TEMPLATE_DATABASE);
  const pool = new pg.Pool({ connectionString: templateUrl, max: 1 });
  const db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  await migrateToLatest(db);
  await db.destroy();

  project.provide('pgAdminUrl', adminUrl);
  project.provide('pgTemplate', TEMPLATE_DATABASE);
  return async () => {
    const cleanup = new pg.Client({ connectionString: adminUrl });
    await cleanup.connect();
    await cleanup
      .query(`drop database if exists ${TEMPLATE_DATABASE} with (force)`)
      .catch(() => {});
    // Another run may share the embedded server: leave it up while its databases exist.
    const others = await cleanup.query(
      `select 1 from pg_database where datname like 'lingxi\\_t\\_%'`,
    );
    await cleanup.end();
    if (others.rowCount === 0) await embedded?.stop();
    else embedded?.detach();
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
    pgTemplate: string;
  }
}
