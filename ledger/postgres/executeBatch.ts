import type pg from 'pg';
import { v7 as uuidv7 } from 'uuid';
import type { BatchContext, PreparedCommand } from '../command.js';
import { IdempotencyConflictError, LedgerError } from '../errors.js';
import { BatchState, countLaterPostings } from '../state.js';
import { readBatchInputs, type BatchInputs, type IdempotencyRecord } from './readBatchInputs.js';
import { connectTrusted, StallWatch } from './connectionErrors.js';
import type { KnownState } from './knownState.js';
import { buildBatchWrite, writeBatch } from './writeBatch.js';

export type CommandOutcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * A batch's write failed in a way that does not say whether it committed: the connection broke
 * (or the server ended the session) before the answer came. `batchId` names the batch's fence
 * row, which tells (see `settleUnknownOutcome`); `outcomes` are what the callers get if it did.
 */
export class BatchOutcomeUnknownError extends Error {
  constructor(
    readonly batchId: string,
    readonly outcomes: CommandOutcome[],
    cause: unknown,
  ) {
    super(`the database did not answer whether batch ${batchId} committed`, { cause });
    this.name = 'BatchOutcomeUnknownError';
  }
}

/**
 * Whether an error is the server refusing a statement (its transaction then rolled back), as
 * opposed to a broken connection or a session the server ended, after which the statement
 * may or may not have committed.
 */
export function isRefusal(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return (
    typeof code === 'string' &&
    /^[0-9A-Z]{5}$/.test(code) &&
    !code.startsWith('08') &&
    !code.startsWith('57P')
  );
}

/**
 * How a batch keeps what it read true until it writes.
 * - `optimistic`: read without locks (or take what this process knows), then write everything
 *   and commit in one statement of relative changes, which fails if an account would end
 *   below zero or a hold it resolves is no longer pending. One or two round trips; rows are
 *   locked only while that statement runs.
 * - `locking`: the classic way, for a batch that keeps losing the optimistic race: a
 *   transaction that locks holds and accounts (in id order) before it plans.
 * - `caller-transaction`: like `locking`, inside a transaction the caller opened and will
 *   commit, so the ledger change commits (or not) with the caller's own rows.
 */
export type BatchMode = 'optimistic' | 'locking' | 'caller-transaction';

/**
 * Runs a batch of prepared commands: reads what they need (or, with `known` and nothing
 * unknown to it, takes it from memory), plans each in order against that state, and writes
 * every row of the batch in one statement. A command that is refused (insufficient funds,
 * a conflict...) gets its error and writes nothing; the others go ahead.
 *
 * Throws only for database errors (after rolling back); the batcher decides to retry.
 */
export async function executeBatch(
  client: pg.PoolClient,
  commands: ReadonlyArray<PreparedCommand<unknown>>,
  mode: BatchMode,
  known?: KnownState,
): Promise<CommandOutcome[]> {
  let mark = known?.mark() ?? 0;
  if (mode === 'optimistic') {
    let inputs = known?.inputsFor(commands) ?? null;
    let planned = inputs ? planBatch(commands, inputs) : null;
    // What is remembered may be older than a top-up, than another process resolving a hold
    // (its account then holds less than the hold remembered as pending), or than the deadline
    // by this machine's clock: refuse anything, or book a shortfall, only on what the database
    // says now.
    if (!inputs || planned!.state.decidedOnTotals || planned!.outcomes.some((o) => !o.ok)) {
      inputs = await readBatchInputs(client, commands, { lock: false });
      mark = known?.rememberRead(inputs, mark) ?? mark;
      planned = planBatch(commands, inputs);
    }
    const { outcomes, state, newKeys } = planned!;
    const batchId = uuidv7();
    const write = buildBatchWrite(state, newKeys, batchId);
    const totals = await unlessOutcomeUnknown(batchId, outcomes, () => writeBatch(client, write));
    rememberCommitted(known, () => known?.rememberWrite(state, totals, mark));
    return outcomes;
  }
  if (mode === 'caller-transaction') {
    // The caller may still roll back: nothing of this is remembered.
    const inputs = await readBatchInputs(client, commands, { lock: true });
    const { outcomes, state, newKeys } = planBatch(commands, inputs);
    await writeBatch(client, buildBatchWrite(state, newKeys, null));
    return outcomes;
  }
  await client.query('begin');
  try {
    const inputs = await readBatchInputs(client, commands, { lock: true });
    const { outcomes, state, newKeys } = planBatch(commands, inputs);
    const batchId = uuidv7();
    const write = buildBatchWrite(state, newKeys, batchId);
    const totals = await unlessOutcomeUnknown(batchId, outcomes, async () => {
      const written = await writeBatch(client, write);
      await client.query('commit');
      return written;
    });
    rememberCommitted(known, () => known?.rememberWrite(state, totals, mark));
    return outcomes;
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
  }
}

/**
 * Runs what a batch does after it committed to keep this process's memory. Nothing may fail a
 * committed batch: its callers would get an error for what was written, and the batcher would
 * run the batch again (each command alone), writing it twice. What cannot be remembered is
 * forgotten, so the next batches read afresh.
 */
function rememberCommitted(known: KnownState | undefined, remember: () => void): void {
  try {
    remember();
  } catch {
    known?.forgetAll();
  }
}

/**
 * Tells whether the batch named `batchId` committed, when its own answer was lost: inserts the
 * batch's fence row, marked abandoned. The insert finds the batch's row only if the batch
 * committed; if the batch is still running with its row written, the insert waits for it to
 * end; if it has not written it yet, the batch now fails on the conflict and never commits.
 * A row found marked abandoned is this probe's own, from an attempt whose answer was lost.
 * Tries again while the database cannot be reached, until `deadlineMs` has passed. A try whose
 * connection gives no answer for `attemptTimeoutMs` (0: no bound) closes it and fails as
 * unreachable (a pooled connection may sit on a link that died without a reset).
 */
export async function settleUnknownOutcome(
  pool: pg.Pool,
  batchId: string,
  deadlineMs: number,
  attemptTimeoutMs = 0,
): Promise<'committed' | 'fenced'> {
  const giveUpAt = Date.now() + deadlineMs;
  for (let attempt = 1; ; attempt += 1) {
    let watch: StallWatch | undefined;
    let broken = false;
    try {
      const client = await connectTrusted(pool);
      watch = new StallWatch(pool, client, attemptTimeoutMs);
      const { rowCount } = await client.query(
        `insert into ledger_batch_fences (batch_id, abandoned) values ($1, true) on conflict (batch_id) do nothing`,
        [batchId],
      );
      if (rowCount === 1) return 'fenced';
      // The row is there: the batch's own, or ours from an attempt whose answer was lost.
      const { rows } = await client.query<{ abandoned: boolean }>(
        `select abandoned from ledger_batch_fences where batch_id = $1`,
        [batchId],
      );
      return rows[0]?.abandoned === false ? 'committed' : 'fenced';
    } catch (error) {
      const failure = watch?.stalled ?? error;
      broken = !isRefusal(failure);
      const delayMs = Math.min(1000, 50 * 2 ** (attempt - 1));
      if (isRefusal(failure) || Date.now() + delayMs > giveUpAt) throw failure;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    } finally {
      watch?.release(broken);
    }
  }
}

/** Runs a batch's write; a failure that leaves its commit in doubt becomes BatchOutcomeUnknownError. */
async function unlessOutcomeUnknown<T>(
  batchId: string,
  outcomes: CommandOutcome[],
  write: () => Promise<T>,
): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (isRefusal(error)) throw error;
    throw new BatchOutcomeUnknownError(batchId, outcomes, error);
  }
}

function planBatch(commands: ReadonlyArray<PreparedCommand<unknown>>, inputs: BatchInputs) {
  const state = new BatchState(inputs.accounts);
  for (const hold of inputs.holds.values()) state.holds.set(hold.id, hold);
  const context: BatchContext = {
    state,
    reversals: inputs.reversals,
    overdueHolds: inputs.overdueHolds,
  };
  const newKeys = new Map<string, IdempotencyRecord>();
  const outcomes: CommandOutcome[] = commands.map((command) => {
    try {
      const key = command.idempotencyKey;
      if (key) {
        const previous = inputs.idempotency.get(key) ?? newKeys.get(key);
        if (previous) {
          if (previous.requestHash !== command.requestHash) throw new IdempotencyConflictError(key);
          return { ok: true, value: command.replay(previous.result) };
        }
      }
      const value = command.plan(context);
      if (key)
        newKeys.set(key, { requestHash: command.requestHash ?? '', result: command.encode(value) });
      return { ok: true, value };
    } catch (error) {
      if (error instanceof LedgerError) return { ok: false, error };
      throw error;
    }
  });
  countLaterPostings(state.postings);
  return { outcomes, state, newKeys };
}
