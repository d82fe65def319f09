import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import { badRequest } from '../errors.js';
import {
  claimIdempotencyKey,
  hashIdempotentRequest,
  keepIdempotencyClaim,
  recordIdempotentAnswer,
  releaseIdempotencyClaim,
} from '../idempotency/idempotencyClaims.js';
import { canonicalJson } from '../integrity/canonical.js';
import type { Runtime } from '../runtime.js';

/** The option's name, as errors name it. */
export const IDEMPOTENCY_OPTION = '--idempotency-key';

/** Records the command's answer in the transaction that does its work (nothing without a key). */
export type RecordAnswer = (trx: Kysely<Database>, answer: unknown) => Promise<void>;

export type IdempotentResult<T> =
  | { replayed: false; answer: T }
  /** The answer the first run recorded (secrets redacted), as JSON. */
  | { replayed: true; answer: unknown };

/**
 * Runs a CLI command's work once per `--idempotency-key`, with the admin API's mechanism
 * (src/idempotency): the first run claims the key and records its answer in the transaction
 * that does the work; a run with the same key and the same arguments (`args`, normalised,
 * hashed as canonical JSON) gets that answer back and writes nothing; the same key with other
 * arguments is refused (409 `idempotency_conflict`, exit 1). Keys are shared by every operator
 * of the CLI (`cli:<key>`), apart from the admin API's and from `credit`'s ledger keys.
 */
export async function runIdempotent<T>(
  runtime: Runtime,
  request: { idempotencyKey: string | undefined; command: string; args: Record<string, unknown> },
  work: (recordAnswer: RecordAnswer) => Promise<T>,
): Promise<IdempotentResult<T>> {
  const { idempotencyKey } = request;
  if (idempotencyKey === undefined) return { replayed: false, answer: await work(async () => {}) };
  if (idempotencyKey.length === 0 || idempotencyKey.length > 200)
    throw badRequest(`${IDEMPOTENCY_OPTION} must be 1-200 characters`, IDEMPOTENCY_OPTION);
  const { db } = runtime.database;
  const leaseMs = runtime.config.http.idempotencyLeaseMs;
  const key = `cli:${idempotencyKey}`;
  const path = `lingxi ${request.command}`;
  const outcome = await claimIdempotencyKey(
    db,
    {
      key,
      method: 'CLI',
      path,
      requestHashes: [hashIdempotentRequest('CLI', path, canonicalJson(request.args))],
      param: IDEMPOTENCY_OPTION,
    },
    { leaseMs },
  );
  if (!outcome.claimed) return { replayed: true, answer: outcome.response };
  const stopHeartbeat = keepIdempotencyClaim(db, key, leaseMs);
  try {
    const answer = await work((trx, body) =>
      recordIdempotentAnswer(trx, key, /* exit code */ 0, body),
    );
    return { replayed: false, answer };
  } catch (error) {
    // Nothing committed with the answer: the same key may be used again.
    await releaseIdempotencyClaim(db, key);
    throw error;
  } finally {
    stopHeartbeat();
  }
}
