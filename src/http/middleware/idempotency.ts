import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Context, Next } from 'koa';
import type { Database } from '../../db/schema.js';
import { badRequest, conflict } from '../../errors.js';

/**
 * POSTs carrying `Idempotency-Key`: the first request runs and its answer is kept; a repeat
 * with the same key and body gets that answer again (header `idempotent-replayed: true`)
 * and changes nothing; the same key with another body, or while the first still runs, is
 * a 409. Secrets in answers (`key`) are not kept: a replay says so instead.
 */
export function idempotency(db: Kysely<Database>) {
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
    if (!inserted) {
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
        throw conflict(
          'a request with this Idempotency-Key is still running',
          'idempotency_in_progress',
          'Idempotency-Key',
        );
      ctx.status = previous.status;
      ctx.body = previous.response;
      ctx.set('idempotent-replayed', 'true');
      return;
    }
    try {
      await next();
    } catch (error) {
      // A failed request may be sent again with the same key.
      await db.deleteFrom('http_idempotency').where('key', '=', scoped).execute();
      throw error;
    }
    const kept = redactSecrets(ctx.body);
    await db
      .updateTable('http_idempotency')
      .set({ status: ctx.status, response: JSON.stringify(kept) })
      .where('key', '=', scoped)
      .execute();
  };
}

function redactSecrets(body: unknown): unknown {
  if (typeof body !== 'object' || body === null || !('key' in body)) return body ?? null;
  return {
    ...(body as Record<string, unknown>),
    key: null,
    keyShownOnce: 'the secret was shown in the first answer only',
  };
}
