import type { Kysely } from 'kysely';
import type { Context, Next } from 'koa';
import type { Database } from '../../db/schema.js';
import { badRequest } from '../../errors.js';
import {
  claimIdempotencyKey,
  hashIdempotentRequest,
  keepIdempotencyClaim,
  recordIdempotentAnswer,
  releaseIdempotencyClaim,
} from '../../idempotency/idempotencyClaims.js';
import { canonicalJson } from '../../integrity/canonical.js';

/** Where the middleware leaves the claim of the request it runs (see recordAnswerWithin). */
const CLAIM = 'idempotencyClaim';

interface Claim {
  key: string;
  /** Set once the handler recorded its answer in its own transaction. */
  answered: boolean;
}

export interface IdempotencyOptions {
  /**
   * How long a claim outlives its last heartbeat. The first request refreshes its claim
   * (`created_at`) every third of this while it runs; a claim not refreshed for this long was
   * left by a process that died mid-request, and the next request with the key runs afresh.
   */
  leaseMs: number;
}

/**
 * POSTs carrying `Idempotency-Key`: the first request runs and its answer is kept; a repeat
 * with the same key and body gets that answer again (headers `idempotent-replayed: true` and
 * `cache-control: no-store`) and changes nothing; the same key with another body, or while
 * the first still runs, is a 409. Secrets in answers (`key`) are not kept: a replay says so instead.
 *
 * A process killed mid-request leaves its claim unanswered: once the claim's heartbeat is
 * older than `leaseMs`, a retry takes the claim over and runs the request again (money
 * routes also key their ledger entry, so work that did commit is replayed, not repeated).
 */
export function idempotency(db: Kysely<Database>, options: IdempotencyOptions) {
  const { leaseMs } = options;
  return async (ctx: Context, next: Next): Promise<void> => {
    const key = ctx.get('idempotency-key');
    if (ctx.method !== 'POST' || !key) return next();
    if (key.length > 200)
      throw badRequest('Idempotency-Key must be at most 200 characters', 'Idempotency-Key');
    const scoped = `${ctx.state['actor'] ?? 'anonymous'}:${key}`;
    // The body's canonical form (keys sorted): the same request from a JSON library that
    // orders keys otherwise is the same request. Claims written before the upgrade hold the
    // hash of the body as it arrived (`legacyHash`); a retry of one still matches it.
    const body: unknown = ctx.state['body'] ?? null;
    const requestHash = hashIdempotentRequest(ctx.method, ctx.path, canonicalJson(body));
    const legacyHash = hashIdempotentRequest(ctx.method, ctx.path, JSON.stringify(body));
    const outcome = await claimIdempotencyKey(
      db,
      {
        key: scoped,
        method: ctx.method,
        path: ctx.path,
        requestHashes: requestHash === legacyHash ? [requestHash] : [requestHash, legacyHash],
        param: 'Idempotency-Key',
      },
      { leaseMs },
    );
    if (!outcome.claimed) {
      ctx.status = outcome.status;
      ctx.body = outcome.response;
      ctx.set('idempotent-replayed', 'true');
      // Only the status and body are kept, not the first answer's headers: a key's creation
      // answered `no-store`, and its replay must too. Every answer kept is one caller's, so
      // none is for a shared cache.
      ctx.set('cache-control', 'no-store');
      return;
    }
    const stopHeartbeat = keepIdempotencyClaim(db, scoped, leaseMs);
    const claim: Claim = { key: scoped, answered: false };
    ctx.state[CLAIM] = claim;
    try {
      await next();
    } catch (error) {
      // A failed request may be sent again with the same key; one whose work committed with
      // its answer (recordAnswerWithin) replays that answer instead.
      await releaseIdempotencyClaim(db, scoped);
      throw error;
    } finally {
      stopHeartbeat();
    }
    if (claim.answered) return;
    await recordIdempotentAnswer(db, scoped, ctx.status, ctx.body);
  };
}

/**
 * Records the answer to the request's Idempotency-Key in `trx`, the transaction that does the
 * request's work: a process that dies after the work committed has answered too, so a retry
 * replays the first answer instead of doing the work again (a second key, or 409 user_exists
 * for the user it did create). Nothing without a key.
 */
export async function recordAnswerWithin(
  trx: Kysely<Database>,
  ctx: Context,
  status: number,
  body: unknown,
): Promise<void> {
  const claim = ctx.state[CLAIM] as Claim | undefined;
  if (!claim) return;
  await recordIdempotentAnswer(trx, claim.key, status, body);
  claim.answered = true;
}
