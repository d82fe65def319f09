import { performance } from 'node:perf_hooks';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema.js';

/**
 * The database's clock, as read from this process without a round trip per use. Deadlines the
 * database enforces (a hold's expiry, checked against `clock_timestamp()` when it is posted and
 * when it is expired) are set on it: a deadline set on this process's clock would be early by
 * as much as that clock is behind the database's (a hold could expire before its call settles),
 * and late by as much as it is ahead.
 *
 * The database's time is read once, then carried forward on this process's monotonic clock
 * (`performance.now()`, which a wall-clock step does not move), and read again in the
 * background every `refreshMs` (for the database's own clock steps and drift). It is right to
 * within half the round trip of the read.
 */
export class DatabaseClock {
  /** The database's time (ms since the epoch) at the monotonic instant `monoMs`. */
  private anchor: { dbMs: number; monoMs: number } | null = null;
  private reading: Promise<void> | null = null;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly refreshMs = 60_000,
  ) {}

  /**
   * Milliseconds since the epoch by the database's clock. Only the first call (or one after
   * every read so far failed) waits for the database; it throws when the database cannot be read.
   */
  async now(): Promise<number> {
    const anchor = this.anchor ?? (await this.read());
    if (performance.now() - anchor.monoMs > this.refreshMs)
      // Until it answers, the last reading carried forward is as good as it was.
      this.read().catch(() => {});
    return anchor.dbMs + (performance.now() - anchor.monoMs);
  }

  private async read(): Promise<{ dbMs: number; monoMs: number }> {
    this.reading ??= (async () => {
      const before = performance.now();
      const { rows } = await sql<{ ms: string }>`
        select (extract(epoch from clock_timestamp()) * 1000)::text as ms`.execute(this.db);
      const after = performance.now();
      this.anchor = { dbMs: Number(rows[0]!.ms), monoMs: (before + after) / 2 };
    })().finally(() => {
      this.reading = null;
    });
    await this.reading;
    return this.anchor!;
  }
}
