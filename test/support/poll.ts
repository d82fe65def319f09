import type pg from 'pg';

/** Polls `check` every 20 ms until it holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Counts with `pool`: `count(sql)` runs `select (sql)::int` (a scalar query) and returns it. */
export function counter(pool: pg.Pool): (sql: string, params?: unknown[]) => Promise<number> {
  return async (sql, params = []) => {
    const { rows } = await pool.query<{ n: number }>(`select (${sql})::int as n`, params);
    return rows[0]!.n;
  };
}

/** The ledger entries whose metadata carries `{"test": tag}`, counted. */
export function entriesTaggedWith(
  count: (sql: string, params?: unknown[]) => Promise<number>,
): (tag: string) => Promise<number> {
  return (tag) => count(`select count(*) from ledger_entries where metadata->>'test' = $1`, [tag]);
}
