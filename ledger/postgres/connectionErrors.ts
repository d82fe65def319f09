import type pg from 'pg';

const guarded = new WeakSet<pg.ClientBase>();

/**
 * A pg client whose connection breaks while it is checked out rejects the query in flight
 * and also emits 'error'; with no listener, that event would crash the process. The ledger
 * learns of the break from the rejected query, so the event itself is ignored.
 */
export function ignoreConnectionErrors(client: pg.ClientBase): void {
  if (guarded.has(client)) return;
  guarded.add(client);
  client.on('error', () => {});
}

/** How many of a pool's connections stalled (see StallWatch), and when each client connected. */
const stallsOf = new WeakMap<pg.Pool, number>();
const connectedAfter = new WeakMap<pg.ClientBase, number>();

/**
 * Guards every client `pool` connects from now on (see ignoreConnectionErrors), and notes
 * how many of the pool's connections had stalled by then (see connectTrusted).
 */
export function guardPoolClients(pool: pg.Pool): void {
  pool.on('connect', (client) => {
    ignoreConnectionErrors(client);
    connectedAfter.set(client, stallsOf.get(pool) ?? 0);
  });
}

/**
 * A client of `pool` for the ledger's writes: one connected before a connection of the pool
 * last stalled is closed and another taken. When a link dies without a reset (a partition, a
 * failover behind a virtual IP), the idle connections opened over it are as dead as the one
 * that stalled; each would stall the next write in turn.
 */
export async function connectTrusted(pool: pg.Pool): Promise<pg.PoolClient> {
  for (;;) {
    const client = await pool.connect();
    ignoreConnectionErrors(client);
    if ((connectedAfter.get(client) ?? 0) >= (stallsOf.get(pool) ?? 0)) return client;
    client.release(true);
  }
}

/**
 * Counts a stall of one of `pool`'s connections, found by a bound other than the ledger's own
 * (a read's `database.queryTimeoutMs`): connectTrusted then passes over the connections opened
 * before it, as after a write's stall.
 */
export function noteStall(pool: pg.Pool): void {
  stallsOf.set(pool, (stallsOf.get(pool) ?? 0) + 1);
}

/** Clients a StallWatch watches now: their work has the ledger's bound, and no other. */
const watched = new WeakSet<pg.ClientBase>();

/** Whether a StallWatch watches `client` now (a ledger write or a settling probe runs on it). */
export function isWatched(client: pg.ClientBase): boolean {
  return watched.has(client);
}

/**
 * A connection that went `timeoutMs` without an answer, closed by whoever watched it: a ledger
 * write or the probe that settles one (`ledger.writeTimeoutMs`), or a query on the service's
 * pool (`database.queryTimeoutMs`, named by `setting`). The link may have died without a reset
 * (a network partition, a failover behind a virtual IP), which the kernel would only notice
 * minutes later. `ETIMEDOUT`, as the kernel's own: the database was unavailable, nothing was
 * refused.
 */
export class DatabaseStalledError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(
    readonly timeoutMs: number,
    setting = 'ledger.writeTimeoutMs',
  ) {
    super(
      `the database did not answer within ${timeoutMs} ms (${setting}): the connection was closed`,
    );
    this.name = 'DatabaseStalledError';
  }
}

/**
 * Watches a checked-out client of `pool` while work runs on it: if `timeoutMs` (0: never)
 * pass before `release`, closes its connection (the query in flight then fails at once, as on
 * a broken connection), takes it out of the pool, and has connectTrusted pass over the
 * connections opened before. `stalled` is then the error to report.
 */
export class StallWatch {
  stalled: DatabaseStalledError | null = null;
  private readonly timer: NodeJS.Timeout | null;

  constructor(
    pool: pg.Pool,
    private readonly client: pg.PoolClient,
    timeoutMs: number,
  ) {
    watched.add(client);
    this.timer =
      timeoutMs > 0
        ? setTimeout(() => {
            this.stalled = new DatabaseStalledError(timeoutMs);
            watched.delete(client);
            noteStall(pool);
            // pg ends a client with a query in flight by destroying its socket: no goodbye
            // is waited for on a link that carries nothing.
            client.release(this.stalled);
          }, timeoutMs)
        : null;
  }

  /** Stops watching and gives the client back (`broken`: closes it), unless the watch closed it. */
  release(broken: boolean): void {
    if (this.timer) clearTimeout(this.timer);
    watched.delete(this.client);
    if (!this.stalled) this.client.release(broken);
  }
}
