import type pg from 'pg';

/** Memory a snapshot's sorts may use on the server before they spill to disk. */
const SORT_MEMORY = '32MB';

/** Rows fetched per round trip from a server-side cursor (a bound on memory, not on size). */
export const DEFAULT_PAGE_ROWS = 2_000;
const MAX_PAGE_ROWS = 50_000;

/**
 * A read-only view of the database at one instant, read through server-side cursors in
 * bounded pages: an export of any size holds one page in memory, and every query of one
 * export (a pre-pass over accounts, then the entries) sees the same snapshot, so their
 * numbers agree. The session time zone is UTC, so a date without a zone means UTC midnight.
 *
 * The transaction is read-only and never takes a transaction id, so it holds back neither
 * writers nor the sealing bound; only vacuum waits for it.
 */
export class SnapshotReader {
  private cursors = 0;
  private closed = false;

  private constructor(
    private readonly client: pg.PoolClient,
    private readonly ownsClient: boolean,
  ) {}

  /** A snapshot on a connection of its own from `pool`, returned to the pool on close. */
  static async open(pool: pg.Pool): Promise<SnapshotReader> {
    const client = await pool.connect();
    try {
      return await SnapshotReader.begin(client, true);
    } catch (error) {
      client.release(error instanceof Error ? error : true);
      throw error;
    }
  }

  /** A snapshot on a connection the caller holds (and keeps: close only ends the transaction). */
  static async begin(client: pg.PoolClient, ownsClient = false): Promise<SnapshotReader> {
    await client.query('begin isolation level repeatable read read only');
    try {
      // Every cursor is read to its end, so plan for the whole result, not the first rows;
      // and JIT compilation only adds start-up time to these long scans.
      await client.query(
        `set local timezone = 'UTC'; set local cursor_tuple_fraction = 1; set local jit = off;
         set local work_mem = '${SORT_MEMORY}'`,
      );
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    }
    return new SnapshotReader(client, ownsClient);
  }

  /** One query, all of its rows (for small results only: totals, counts). */
  async query<Row>(text: string, values: unknown[] = []): Promise<Row[]> {
    const result = await this.client.query(text, values);
    return result.rows as Row[];
  }

  /**
   * The rows of `text` in pages of at most `pageRows`, through a cursor. The next page is
   * asked for before this one is handed over, so the server reads while the caller works
   * (two pages in memory at most).
   */
  async *pages<Row>(
    text: string,
    values: unknown[] = [],
    pageRows = DEFAULT_PAGE_ROWS,
  ): AsyncGenerator<Row[]> {
    const size = Math.min(Math.max(Math.trunc(pageRows), 1), MAX_PAGE_ROWS);
    const name = `lingxi_export_${++this.cursors}`;
    await this.client.query(`declare ${name} no scroll cursor for ${text}`, values);
    const fetch = () => this.client.query(`fetch forward ${size} from ${name}`);
    let pending: Promise<pg.QueryResult> | null = fetch();
    try {
      while (pending !== null) {
        const rows: unknown[] = (await pending).rows;
        pending = rows.length < size ? null : fetch();
        if (rows.length > 0) yield rows as Row[];
      }
    } finally {
      if (pending !== null) await pending.catch(() => {});
      if (!this.closed) await this.client.query(`close ${name}`).catch(() => {});
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.client.query('rollback');
      if (this.ownsClient) this.client.release();
    } catch (error) {
      if (this.ownsClient) this.client.release(error instanceof Error ? error : true);
      else throw error;
    }
  }
}

/** Runs `body` on a snapshot and closes it, however the body ends. */
export async function* withSnapshot<T>(
  pool: pg.Pool,
  body: (reader: SnapshotReader) => AsyncGenerator<T>,
): AsyncGenerator<T> {
  const reader = await SnapshotReader.open(pool);
  try {
    yield* body(reader);
  } finally {
    await reader.close();
  }
}
