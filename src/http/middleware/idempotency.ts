import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Context, Next } from 'koa';
import type { Database } from '../../db/schema.js';
import { AppError, badRequest, conflict } from '../../errors.js';
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
 * with the same key and body gets that answer again (header `idempotent-replayed: true`)
 * and changes nothing; the same key with another body, or while the first still runs, is
 * a 409. Secrets in answers (`key`) are not kept: a replay says so instead.
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
    const requestHash = hashRequest(ctx, canonicalJson(body));
    const legacyHash = hashRequest(ctx, JSON.stringify(body));
    const hashes = requestHash === legacyHash ? [requestHash] : [requestHash, legacyHash];
    const inserted = await db
      .insertInto('http_idempotency')
      .values({
        key: scoped,
        method: ctx.method,
        path: ctx.path,
        request_hash: requestHash,
        status: null,
        response: null,
      })
      .onConflict((oc) => oc.column('key').doNothing())
      .returning('key')
      .executeTakeFirst();
    const claimed =
      inserted !== undefined || (await takeOverAbandoned(db, scoped, hashes, leaseMs));
    if (!claimed) {
      const previous = await db
        .selectFrom('http_idempotency')
        .selectAll()
        .where('key', '=', scoped)
        .executeTakeFirstOrThrow();
      if (!hashes.includes(previous.request_hash))
        throw conflict(
          'this Idempotency-Key was used for a different request',
          'idempotency_conflict',
          'Idempotency-Key',
        );
      if (previous.status === null)
        throw new AppError(
          'idempotency_in_progress',
          'a request with this Idempotency-Key is still running; retry once it has answered',
          { status: 409, param: 'Idempotency-Key', headers: { 'retry-after': '1' } },
        );
      ctx.status = previous.status;
      ctx.body = previous.response;
      ctx.set('idempotent-replayed', 'true');
      return;
    }
    const heartbeat = setInterval(
      () => {
        db.updateTable('http_idempotency')
          .set({ created_at: sql<Date>`now()` })
          .where('key', '=', scoped)
          .where('status', 'is', null)
          .execute()
          .catch(() => {});
      },
      Math.max(1, Math.floor(leaseMs / 3)),
    );
    const claim: Claim = { key: scoped, answered: false };
    ctx.state[CLAIM] = claim;
    try {
      await next();
    } catch (error) {
      // A failed request may be sent again with the same key; one whose work committed with
      // its answer (recordAnswerWithin) replays that answer instead.
      await db
        .deleteFrom('http_idempotency')
        .where('key', '=', scoped)
        .where('status', 'is', null)
        .execute();
      throw error;
    } finally {
      clearInterval(heartbeat);
    }
    if (claim.answered) return;
    const kept = redactSecrets(ctx.body);
    await db
      .updateTable('http_idempotency')
      .set({ status: ctx.status, response: JSON.stringify(kept) })
      .where('key', '=', scoped)
      .execute();
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
  await trx
    .updateTable('http_idempotency')
    .set({ status, response: JSON.stringify(redactSecrets(body)) })
    .where('key', '=', claim.key)
    .execute();
  claim.answered = true;
}

function hashRequest(ctx: Context, body: string): string {
  return createHash('sha256').update(`${ctx.method} ${ctx.path}\n${body}`).digest('hex');
}

/**
 * Takes over a claim whose request died before answering (no heartbeat for `leaseMs`), for the
 * same request only; one caller wins when several retry at once.
 */
async function takeOverAbandoned(
  db: Kysely<Database>,
  key: string,
  requestHashes: string[],
  leaseMs: number,
): Promise<boolean> {
  const taken = await db
    .updateTable('http_idempotency')
    .set({ created_at: sql<Date>`now()` })
    .where('key', '=', key)
    .where('status', 'is', null)
    .where('request_hash', 'in', requestHashes)
    .where('created_at', '<', sql<Date>`now() - make_interval(secs => ${leaseMs / 1000})`)
    .returning('key')
    .executeTakeFirst();
  return taken !== undefined;
}

function redactSecrets(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || !('key' in body)) return body ?? null;
  return {
    ...(body as Record<string, unknown>),
    key: null,
    keyShownOnce: 'the secret was shown in the first answer only',
  };
}
