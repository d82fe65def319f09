import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { Context, Next } from 'koa';
import type { Database } from '../../db/schema.js';
import { AppError, badRequest, conflict } from '../../errors.js';

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
    const requestHash = createHash('sha256')
      .update(`${ctx.method} ${ctx.path}\n${JSON.stringify(ctx.state['body'] ?? null)}`)
      .digest('hex');
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
      inserted !== undefined || (await takeOverAbandoned(db, scoped, requestHash, leaseMs));
    if (!claimed) {
      const previous = await db
        .selectFrom('http_idempotency')
        .selectAll()
        .where('key', '=', scoped)
        .executeTakeFirstOrThrow();
      if (previous.request_hash !== requestHash)
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
    try {
      await next();
    } catch (error) {
      // A failed request may be sent again with the same key.
      await db.deleteFrom('http_idempotency').where('key', '=', scoped).execute();
      throw error;
    } finally {
      clearInterval(heartbeat);
    }
    const kept = redactSecrets(ctx.body);
    await db
      .updateTable('http_idempotency')
      .set({ status: ctx.status, response: JSON.stringify(kept) })
      .where('key', '=', scoped)
      .execute();
  };
}

/**
 * Takes over a claim whose request died before answering (no heartbeat for `leaseMs`), for the
 * same request only; one caller wins when several retry at once.
 */
async function takeOverAbandoned(
  db: Kysely<Database>,
  key: string,
  requestHash: string,
  leaseMs: number,
): Promise<boolean> {
  const taken = await db
    .updateTable('http_idempotency')
    .set({ created_at: sql<Date>`now()` })
    .where('key', '=', key)
    .where('status', 'is', null)
    .where('request_hash', '=', requestHash)
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
