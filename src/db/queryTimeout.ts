import type pg from 'pg';
import { DatabaseStalledError, isWatched, noteStall } from '../../ledger/index.js';

/** Clients checked out through an unbounded view (see unboundedPool), until they are released. */
const unbounded = new WeakSet<pg.ClientBase>();

/**
 * Bounds every query on the clients `pool` connects from now on: one with no answer after
 * `timeoutMs` (0: no bound) rejects with DatabaseStalledError (`ETIMEDOUT`: 503), and its connection is closed (the
 * pool then discards the client instead of handing it out again). The ledger's writes (their
 * clients watched by its StallWatch, with `ledger.writeTimeoutMs`) and the clients of
 * unboundedPool are left alone, as are queries that stream their rows (a Submittable).
 */
export function boundPoolQueries(pool: pg.Pool, timeoutMs: number): void {
  pool.on('release', (_error: Error | undefined, client: pg.PoolClient) => {
    unbounded.delete(client);
  });
  if (timeoutMs <= 0) return;
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
    client.query = function boundedQuery(...args: unknown[]): unknown {
      const first = args[0] as { submit?: unknown } | undefined;
      if (unbounded.has(client) || isWatched(client) || typeof first?.submit === 'function')
        return query(...args);
      // node-postgres' two forms: a callback last (pg-pool's own pool.query), or a promise.
      const last = args.at(-1);
      const callback =
        typeof last === 'function'
          ? (last as (error: Error | null, result?: unknown) => void)
          : undefined;
      const answer = new Promise((resolve, reject) => {
        let stalled = false;
        const timer = setTimeout(() => {
          stalled = true;
          noteStall(pool);
          reject(new DatabaseStalledError(timeoutMs, 'database.queryTimeoutMs'));
          // pg ends a client with a query in flight by destroying its socket: no goodbye is
          // waited for on a link that carries nothing. The query in flight fails (ignored
          // here), and the client, no longer queryable, is discarded on its release.
          void client.end().catch(() => {});
        }, timeoutMs);
        query(...(callback ? args.slice(0, -1) : args)).then(
          (result) => {
            if (stalled) return;
            clearTimeout(timer);
            resolve(result);
          },
          (error: unknown) => {
            if (stalled) return;
            clearTimeout(timer);
            reject(error);
          },
        );
      });
      if (!callback) return answer;
      answer.then(
        (result) => callback(null, result),
        (error: Error) => callback(error),
      );
      return undefined;
    } as typeof client.query;
  });
}

/**
 * `pool` without the bound of boundPoolQueries, for long jobs (exports, integrity checks,
 * sealing, retention, migrations): the same connections (a client checked out through it is
 * exempt until released), its queries wait for as long as they take. Ending it ends nothing
 * (the pool is ended by its owner).
 */
export function unboundedPool(pool: pg.Pool): pg.Pool {
  const view = Object.create(pool) as pg.Pool;
  const connect = async (): Promise<pg.PoolClient> => {
    const client = await pool.connect();
    unbounded.add(client);
    return client;
  };
  Object.assign(view, {
    connect(
      callback?: (error: Error | undefined, client?: pg.PoolClient, done?: () => void) => void,
    ) {
      if (!callback) return connect();
      connect().then(
        (client) => callback(undefined, client, () => client.release()),
        (error: Error) => callback(error),
      );
      return undefined;
    },
    async query(...args: unknown[]) {
      // As pg-pool's own pool.query: a client for the one query, discarded if it failed.
      const client = await connect();
      try {
        const result = await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
        client.release();
        return result;
      } catch (error) {
        client.release(error instanceof Error ? error : true);
        throw error;
      }
    },
    async end() {},
  });
  return view;
}
