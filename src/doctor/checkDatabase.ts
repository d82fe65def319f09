import { Kysely, Migrator, PostgresDialect, sql, type MigrationProvider } from 'kysely';
import pg from 'pg';
import { migrations } from '../../migrations/index.js';
import type { Config } from '../config/schema.js';
import { openDatabase } from '../db/connect.js';
import { fail, ok, reasonOf, warn, withTimeout, type DoctorCheck } from './check.js';
import { checkDepositAddresses } from './checkDepositAddresses.js';

const AREA = 'database';
/** The oldest server major the test suite runs on (CI: the machine's PostgreSQL 15; embedded: 17). */
const TESTED_MAJOR_MIN = 15;

/**
 * Connects (DATABASE_URL / database.url, else the embedded server under database.embedded.dir,
 * started for the check and stopped after), reads the server version and compares the applied
 * migrations with this build's, and checks every deposit address assigned derives from the
 * configured xpubs. Applies nothing.
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
    return await inspect(db, where, config);
  } finally {
    await close().catch(() => {});
  }
}

async function inspect(db: Kysely<unknown>, where: string, config: Config): Promise<DoctorCheck[]> {
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
  checks.push(...(await checkTransactionIds(db)));
  checks.push(...(await checkDepositAddresses(db, config)));
  return checks;
}

/**
 * Entries and seals are ordered by the server's transaction ids (xid8). A book restored with
 * pg_restore onto a new server carries the old server's ids, which may be ahead of the new
 * server's: new entries would then sort inside sealed ranges (the seals' check calls that
 * tampering) and sealing stops ("bound below the last seal's"). Found here, before it starts.
 */
async function checkTransactionIds(db: Kysely<unknown>): Promise<DoctorCheck[]> {
  const { rows: tables } = await sql<{ found: boolean }>`
    select to_regclass('ledger_entries') is not null and to_regclass('ledger_seals') is not null as found`.execute(
    db,
  );
  if (!tables[0]?.found) return [];
  const { rows } = await sql<{ highest: string | null; next: string }>`
    select greatest((select max(tx_id) from ledger_entries), (select max(to_tx_id) from ledger_seals))::text as highest,
           pg_snapshot_xmax(pg_current_snapshot())::text as next`.execute(db);
  const { highest, next } = rows[0]!;
  if (highest === null || BigInt(highest) < BigInt(next))
    return [
      ok(AREA, 'transaction ids: the book is behind the server (entries and seals in order)'),
    ];
  return [
    fail(
      AREA,
      `the book holds transaction id ${highest}, ahead of this server's next (${next}): it was restored onto another server, and new entries would sort inside sealed ranges (and sealing would stop)`,
      "stop every role; restore again onto a server whose transaction ids are ahead (on a new cluster, before restoring: `pg_resetwal -e EPOCH` with EPOCH above the old server's, see docs/operating.md)",
    ),
  ];
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
