import type pg from 'pg';
import type { PostgresLedger } from '../../ledger/index.js';

/**
 * The ledger as a deposit watcher sees it, with a trap: once armed, the connection of the
 * iteration's transaction is terminated (pg_terminate_backend, through `killer`) right after
 * the iteration's deposit credits are written in it, before its commit.
 */
export function ledgerKilledAfterCredits(ledger: PostgresLedger, killer: pg.Pool) {
  let armed = false;
  let killed = 0;
  const trapped = new Proxy(ledger, {
    get(target, property, receiver) {
      if (property !== 'within') return Reflect.get(target, property, receiver) as unknown;
      return (client: pg.PoolClient) => {
        const inner = target.within(client);
        return {
          ...inner,
          postEntries: async (entries: Parameters<typeof inner.postEntries>[0]) => {
            const results = await inner.postEntries(entries);
            if (armed && entries.some((e) => e.kind === 'deposit')) {
              armed = false;
              const { rows } = await client.query<{ pid: number }>(
                'select pg_backend_pid() as pid',
              );
              await killer.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
              killed += 1;
            }
            return results;
          },
        };
      };
    },
  });
  return {
    ledger: trapped,
    /** The next iteration that credits a deposit loses its connection before its commit. */
    arm: () => {
      armed = true;
    },
    /** How many connections the trap has terminated. */
    killed: () => killed,
  };
}
