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

/** Guards every client `pool` connects from now on (see ignoreConnectionErrors). */
export function guardPoolClients(pool: pg.Pool): void {
  pool.on('connect', ignoreConnectionErrors);
}
