import { Kysely, Migrator, PostgresDialect, sql, type MigrationProvider } from 'kysely';
import pg from 'pg';
import { migrations } from '../../migrations/index.js';
import type { Config } from '../config/schema.js';
import { openDatabase } from '../db/connect.js';
import { fail, ok, reasonOf, warn, withTimeout, type DoctorCheck } from './check.js';

const AREA = 'database';
/** The oldest server major the test suite runs on (CI: the machine's PostgreSQL 15; embedded: 17). */
const TESTED_MAJOR_MIN = 15;

/**
 * Connects (DATABASE_URL / database.url, else the embedded server under database.embedded.dir,
 * started for the check and stopped after), reads the server version and compares the applied
 * migrations with this build's. Applies nothing.
 */
export async function checkDatabase(config: Config, timeoutMs: number): Promise<DoctorCheck[]> {
  let db: Kysely<unknown>;
  let close: () => Promise<void>;
  let where: string;
  try {
    if (config.database.url) {
      where = describeUrl(config.database.url);
      const pool = new pg.Pool({
        connectionString: config.database.url,
        max: 1,
        connectionTimeoutMillis: timeoutMs,
        query_timeout: timeoutMs,
      });
      pool.on('error', () => {});
      db = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
      close = () => db.destroy();
    } else {
      where = `the embedded server (${config.database.embedded.dir}, port ${config.database.embedded.port})`;
      const handle = await withTimeout(openDatabase({ config, poolSize: 1 }), 60_000, where);
      db = handle.db as unknown as Kysely<unknown>;
      close = () => handle.close();
    }
  } catch (error) {
    return [
      fail(
        AREA,
        `cannot start or reach the database: ${reasonOf(error)}`,
        'set DATABASE_URL to a reachable PostgreSQL, or free database.embedded.port',
      ),
    ];
  }
  try {
    return await inspect(db, where);
  } finally {
    await close().catch(() => {});
  }
}

async function inspect(db: Kysely<unknown>, where: string): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  let version: string;
  try {
    const { rows } = await sql<{ server_version: string }>`show server_version`.execute(db);
    version = rows[0]?.server_version ?? 'unknown';
  } catch (error) {
    return [
      fail(
        AREA,
        `cannot connect to ${where}: ${reasonOf(error)}`,
        'check DATABASE_URL (host, port, user, password, database name) and that this machine can reach the server',
      ),
    ];
  }
  const major = Number.parseInt(version, 10);
  checks.push(
    Number.isInteger(major) && major < TESTED_MAJOR_MIN
      ? warn(
          AREA,
          `PostgreSQL ${version} at ${where}`,
          `Lingxi is tested on PostgreSQL ${TESTED_MAJOR_MIN} and newer; upgrade when you can`,
        )
      : ok(AREA, `PostgreSQL ${version} at ${where}`),
  );

  const provider: MigrationProvider = { getMigrations: async () => migrations };
  try {
    const known = await new Migrator({ db, provider }).getMigrations();
    const pending = known.filter((m) => m.executedAt === undefined).map((m) => m.name);
    const applied = await appliedMigrationNames(db);
    const knownNames = new Set(known.map((m) => m.name));
    const unknown = applied.filter((name) => !knownNames.has(name));
    if (unknown.length > 0) {
      checks.push(
        fail(
          AREA,
          `the database has migrations this build does not know: ${unknown.join(', ')}`,
          'a newer Lingxi has migrated this database: run that version (or newer), never an older one',
        ),
      );
    } else if (pending.length > 0) {
      checks.push(
        warn(
          AREA,
          `${pending.length} of ${known.length} migrations not applied yet: ${pending.join(', ')}`,
          'run `lingxi migrate` (start, serve, watch and cron also apply them when they start)',
        ),
      );
    } else {
      checks.push(ok(AREA, `schema up to date: all ${known.length} migrations applied`));
    }
  } catch (error) {
    checks.push(
      fail(
        AREA,
        `cannot read the migrations table: ${reasonOf(error)}`,
        'the database user needs to read and create tables in its database',
      ),
    );
  }
  return checks;
}

async function appliedMigrationNames(db: Kysely<unknown>): Promise<string[]> {
  const { rows: exists } = await sql<{
    found: boolean;
  }>`select to_regclass('kysely_migration') is not null as found`.execute(db);
  if (!exists[0]?.found) return [];
  const { rows } = await sql<{ name: string }>`select name from kysely_migration`.execute(db);
  return rows.map((row) => row.name);
}

/** user@host:port/database, without the password. */
function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    const user = parsed.username ? `${decodeURIComponent(parsed.username)}@` : '';
    return `${user}${parsed.host}${parsed.pathname}`;
  } catch {
    return 'DATABASE_URL (not a URL)';
  }
}
