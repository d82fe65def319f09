import type pg from 'pg';
import type { PreparedCommand } from '../command.js';
import {
  BatchOutcomeUnknownError,
  executeBatch,
  isRefusal,
  settleUnknownOutcome,
  type BatchMode,
  type CommandOutcome,
} from './executeBatch.js';
import { connectTrusted, DatabaseStalledError, StallWatch } from './connectionErrors.js';
import { markLostWrite } from './lostWrites.js';
import type { KnownState } from './knownState.js';

export interface BatcherOptions {
  /** Most commands in one batch. */
  maxSize: number;
  /** Lanes: batches in flight at once. */
  concurrency: number;
  /** Whole-batch retries on conflicts, deadlocks and key races. */
  maxRetries?: number;
  /** Optimistic attempts before a batch falls back to locking. */
  optimisticAttempts?: number;
  /**
   * How long a batch whose connection broke before its answer came keeps trying to learn
   * whether it committed, while the database cannot be reached (default 15 s).
   */
  unknownOutcomeDeadlineMs?: number;
  /**
   * How long one attempt of a batch may wait for the database's answers on its connection
   * (0: for ever). Past it, that connection is closed: a link dead without a reset would
   * otherwise hold the lane, and every write queued behind it, until the kernel gives up
   * (about 15 minutes). Also bounds each try of the probe that settles a batch's outcome.
   */
  writeTimeoutMs?: number;
  onBatch?: (info: BatchInfo) => void;
  /** What this process knows of accounts and holds, to skip reads (see KnownState). */
  known?: KnownState;
}

export interface BatchInfo {
  size: number;
  attempts: number;
  mode: BatchMode;
  durationMs: number;
}

interface Waiting {
  command: PreparedCommand<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

interface Lane {
  queue: Waiting[];
  busy: boolean;
}

/**
 * Group commit. Commands wait in a lane's queue while that lane's batch is in flight and go
 * together in its next batch, so many callers share one write and one commit (one fsync)
 * without anyone waiting on a timer. Commands that may lower the same no-overdraft
 * account share a lane (they would only race each other); the others take the shortest
 * queue. With `maxSize` 1 each command is its own batch.
 */
export class Batcher {
  private readonly lanes: Lane[];
  private scheduled = false;
  private inFlight = 0;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: BatcherOptions,
  ) {
    this.lanes = Array.from({ length: Math.max(1, options.concurrency) }, () => ({
      queue: [],
      busy: false,
    }));
  }

  submit<Result>(command: PreparedCommand<Result>): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      const lane = this.laneFor(command);
      lane.queue.push({ command, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // Let every command submitted in this turn of the event loop join the batch.
        setImmediate(() => {
          this.scheduled = false;
          for (const l of this.lanes) this.pump(l);
        });
      }
    });
  }

  /** Resolves when nothing is queued or in flight. */
  drain(): Promise<void> {
    if (this.idle()) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private idle(): boolean {
    return this.inFlight === 0 && this.lanes.every((l) => l.queue.length === 0);
  }

  private laneFor(command: PreparedCommand<unknown>): Lane {
    if (command.partitionKey !== undefined)
      return this.lanes[hash(command.partitionKey) % this.lanes.length]!;
    let best = this.lanes[0]!;
    for (const lane of this.lanes) {
      const load = lane.queue.length + (lane.busy ? 1 : 0);
      if (load < best.queue.length + (best.busy ? 1 : 0)) best = lane;
    }
    return best;
  }

  private pump(lane: Lane): void {
    if (lane.busy || lane.queue.length === 0) return;
    const batch = lane.queue.splice(0, this.options.maxSize);
    lane.busy = true;
    this.inFlight += 1;
    void this.run(batch).finally(() => {
      lane.busy = false;
      this.inFlight -= 1;
      this.pump(lane);
      if (this.idle()) for (const resolve of this.drainWaiters.splice(0)) resolve();
    });
  }

  private async run(batch: Waiting[]): Promise<void> {
    const started = performance.now();
    const maxRetries = this.options.maxRetries ?? 30;
    const optimisticAttempts = this.options.optimisticAttempts ?? 3;
    for (let attempt = 1; ; attempt += 1) {
      const mode: BatchMode = attempt <= optimisticAttempts ? 'optimistic' : 'locking';
      const committed = (outcomes: CommandOutcome[]) => {
        try {
          this.options.onBatch?.({
            size: batch.length,
            attempts: attempt,
            mode,
            durationMs: performance.now() - started,
          });
        } catch {
          // The batch committed: a failing observer must not fail it (it would run again).
        }
        settle(batch, outcomes);
      };
      try {
        committed(
          await this.execute(
            batch.map((w) => w.command),
            mode,
          ),
        );
        return;
      } catch (error) {
        // What the batch assumed may be stale: its retry reads afresh.
        this.options.known?.forget(batch.map((w) => w.command));
        if (error instanceof DatabaseStalledError) {
          // Its connection stalled before the batch's write was sent: nothing was written.
          // Run again at once, it would likely stall as long: the link may be down.
          for (const waiting of batch) waiting.reject(error);
          return;
        }
        if (
          error instanceof BatchOutcomeUnknownError &&
          error.cause instanceof DatabaseStalledError
        ) {
          // The write was sent and no answer came in time: the batch may have committed, or
          // may still commit on a server that has not noticed the link is gone. Probing now
          // would hold every write behind this one while the link may stay dead: the callers
          // get a lost write at once (`settleLostWrite` tells, and fences the batch if it has
          // not committed), and the lane moves on with its next batch on another connection.
          for (const waiting of batch) waiting.reject(markLostWrite(error.cause, error.batchId));
          return;
        }
        if (error instanceof BatchOutcomeUnknownError) {
          // Never run again what may have committed: find out first.
          let outcome: 'committed' | 'fenced';
          try {
            outcome = await settleUnknownOutcome(
              this.pool,
              error.batchId,
              this.options.unknownOutcomeDeadlineMs ?? 15_000,
              this.options.writeTimeoutMs ?? 0,
            );
          } catch {
            // Out of reach for too long: the callers get what broke. Whether the batch
            // committed is then unknown to them too; a keyed or hold-bound command replays,
            // and `settleLostWrite` tells later (the error names the batch).
            for (const waiting of batch) waiting.reject(markLostWrite(error.cause, error.batchId));
            return;
          }
          if (outcome === 'committed') {
            committed(error.outcomes);
            return;
          }
          // Fenced: that batch can no longer commit; plan it again as a new one.
          if (attempt <= maxRetries) continue;
          for (const waiting of batch) waiting.reject(error.cause);
          return;
        }
        if (isRetriable(error) && attempt <= maxRetries) {
          await sleep(Math.random() * Math.min(100, 2 ** attempt));
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

  private async execute(
    commands: Array<PreparedCommand<unknown>>,
    mode: BatchMode,
  ): Promise<CommandOutcome[]> {
    const client = await connectTrusted(this.pool);
    const watch = new StallWatch(this.pool, client, this.options.writeTimeoutMs ?? 0);
    let broken = false;
    try {
      return await executeBatch(client, commands, mode, this.options.known);
    } catch (error) {
      // A connection that failed mid-way (not a refusal from the server) is not reused.
      broken = !isRefusal(error);
      if (watch.stalled) {
        // Closed by the watch: what the callers get says so, not "Connection terminated".
        if (error instanceof BatchOutcomeUnknownError)
          throw new BatchOutcomeUnknownError(error.batchId, error.outcomes, watch.stalled);
        throw watch.stalled;
      }
      throw error;
    } finally {
      watch.release(broken);
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
  '40001', // serialization_failure: an optimistic batch lost the race
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '23505', // unique_violation: another process wrote the same idempotency key or reversal first
]);

/**
 * Checks on `ledger_accounts` that a batch planned on stale memory can trip: an account taken
 * below zero by totals that moved meanwhile, or an account's held total taken below zero by
 * resolving a hold another process already resolved (expired, say) while this one remembered
 * it pending. Planned again on what the database holds, such a command is refused properly.
 */
const STALE_PLAN_CHECKS = new Set([
  'ledger_accounts_no_negative',
  'ledger_accounts_debits_pending_check',
  'ledger_accounts_credits_pending_check',
]);

function isRetriable(error: unknown): boolean {
  const { code, constraint } = error as { code?: unknown; constraint?: unknown };
  if (code === '23514' && typeof constraint === 'string' && STALE_PLAN_CHECKS.has(constraint))
    return true;
  return typeof code === 'string' && RETRIABLE.has(code);
}

function hash(text: string): number {
  let h = 0;
  for (let i = 0; i < text.length; i += 1) h = (h * 31 + text.charCodeAt(i)) | 0;
  return Math.abs(h);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
