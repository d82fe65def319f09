/**
 * Errors the batcher rejected a batch's callers with when the batch's answer was lost and it
 * could not find out in time whether it committed (the database stayed out of reach), each
 * with that batch's id: `PostgresLedger.settleLostWrite` settles the batch later. A WeakMap,
 * so the error itself (its class, message and code, which callers map to a 503) is unchanged.
 */
const lostBatches = new WeakMap<object, string>();

/** Tags `error` as the failure of the lost batch `batchId`, and returns it. */
export function markLostWrite(error: unknown, batchId: string): unknown {
  if (typeof error === 'object' && error !== null) lostBatches.set(error, batchId);
  return error;
}

/** The id of the lost batch whose callers got `error`, or null. */
export function lostBatchOf(error: unknown): string | null {
  if (typeof error !== 'object' || error === null) return null;
  return lostBatches.get(error) ?? null;
}
