import type pg from 'pg';
import type { PreparedCommand } from '../command.js';
import { executeBatch, type CommandOutcome } from './executeBatch.js';

export interface BatcherOptions {
  /** Most commands in one transaction. */
  maxSize: number;
  /** Transactions in flight at once. */
  concurrency: number;
  /** Whole-batch retries on serialization failures, deadlocks and key races. */
  maxRetries?: number;
  onBatch?: (info: { size: number; attempts: number; durationMs: number }) => void;
}

interface Waiting {
  command: PreparedCommand<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * Group commit: commands that arrive while transactions are in flight wait in a queue and
 * go together in the next transaction, so that many callers share one commit (and one
 * fsync) without any of them waiting on a timer. With `maxSize` 1 each command is its own
 * transaction.
 */
export class Batcher {
  private readonly queue: Waiting[] = [];
  private inFlight = 0;
  private scheduled = false;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: BatcherOptions,
  ) {}

  submit<Result>(command: PreparedCommand<Result>): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      this.queue.push({ command, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // Let every command submitted in this turn of the event loop join the batch.
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  /** Resolves when nothing is queued or in flight. */
  drain(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private pump(): void {
    while (this.inFlight < this.options.concurrency && this.queue.length > 0) {
      const free = this.options.concurrency - this.inFlight;
      // Spread a backlog across free connections; never exceed maxSize.
      const size = Math.min(this.options.maxSize, Math.ceil(this.queue.length / free));
      const batch = this.queue.splice(0, size);
      this.inFlight += 1;
      void this.run(batch).finally(() => {
        this.inFlight -= 1;
        this.pump();
        if (this.queue.length === 0 && this.inFlight === 0) {
          for (const resolve of this.drainWaiters.splice(0)) resolve();
        }
      });
    }
  }

  private async run(batch: Waiting[]): Promise<void> {
    const started = performance.now();
    const maxRetries = this.options.maxRetries ?? 8;
    let attempts = 0;
    for (;;) {
      attempts += 1;
      try {
        const outcomes = await this.execute(batch.map((w) => w.command));
        this.options.onBatch?.({
          size: batch.length,
          attempts,
          durationMs: performance.now() - started,
        });
        settle(batch, outcomes);
        return;
      } catch (error) {
        if (isRetriable(error) && attempts <= maxRetries) {
          await sleep(Math.random() * Math.min(50, 2 ** attempts));
          continue;
        }
        if (batch.length > 1) {
          // One command may carry what the database refuses: run each alone so only it fails.
          await Promise.all(batch.map((waiting) => this.run([waiting])));
          return;
        }
        for (const waiting of batch) waiting.reject(error);
        return;
      }
    }
  }

  private async execute(commands: Array<PreparedCommand<unknown>>): Promise<CommandOutcome[]> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      return await executeBatch(client, commands);
    } catch (error) {
      broken = !isDatabaseError(error);
      throw error;
    } finally {
      client.release(broken);
    }
  }
}

function settle(batch: Waiting[], outcomes: CommandOutcome[]): void {
  batch.forEach((waiting, i) => {
    const outcome = outcomes[i]!;
    if (outcome.ok) waiting.resolve(outcome.value);
    else waiting.reject(outcome.error);
  });
}

/** SQLSTATEs worth running the whole batch again for. */
const RETRIABLE = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '23505', // unique_violation: another process wrote the same idempotency key or reversal first
]);

function isRetriable(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && RETRIABLE.has(code);
}

function isDatabaseError(error: unknown): boolean {
  return typeof (error as { code?: unknown }).code === 'string';
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
