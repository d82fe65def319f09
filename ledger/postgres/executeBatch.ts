import type pg from 'pg';
import type { BatchContext, PreparedCommand } from '../command.js';
import { IdempotencyConflictError, InsufficientFundsError, LedgerError } from '../errors.js';
import { BatchState, countLaterPostings } from '../state.js';
import { readBatchInputs, type BatchInputs, type IdempotencyRecord } from './readBatchInputs.js';
import type { KnownState } from './knownState.js';
import { writeBatch } from './writeBatch.js';

export type CommandOutcome = { ok: true; value: unknown } | { ok: false; error: unknown };

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
  if (mode === 'optimistic') {
    let inputs = known?.inputsFor(commands) ?? null;
    let planned = inputs ? planBatch(commands, inputs) : null;
    // Remembered totals may be older than a top-up: refuse only on what the database says now.
    if (
      !inputs ||
      planned!.outcomes.some((o) => !o.ok && o.error instanceof InsufficientFundsError)
    ) {
      inputs = await readBatchInputs(client, commands, { lock: false });
      known?.rememberRead(inputs);
      planned = planBatch(commands, inputs);
    }
    const { outcomes, state, newKeys } = planned!;
    const totals = await writeBatch(client, state, newKeys);
    known?.rememberWrite(state, totals);
    return outcomes;
  }
  if (mode === 'caller-transaction') {
    // The caller may still roll back: nothing of this is remembered.
    const inputs = await readBatchInputs(client, commands, { lock: true });
    const { outcomes, state, newKeys } = planBatch(commands, inputs);
    await writeBatch(client, state, newKeys);
    return outcomes;
  }
  await client.query('begin');
  try {
    const inputs = await readBatchInputs(client, commands, { lock: true });
    const { outcomes, state, newKeys } = planBatch(commands, inputs);
    const totals = await writeBatch(client, state, newKeys);
    await client.query('commit');
    known?.rememberWrite(state, totals);
    return outcomes;
  } catch (error) {
    await client.query('rollback').catch(() => {});
    throw error;
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
