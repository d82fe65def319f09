import Router from '@koa/router';
import type { Context } from 'koa';
import type { Kysely } from 'kysely';
import type { Database } from '../../../db/schema.js';
import { audit } from '../../../audit.js';
import { createApiKey, listApiKeys, revokeApiKey } from '../../../keys/apiKeys.js';
import type { Services } from '../../../services.js';
import { objectBody } from '../../objectBody.js';
import { recordAnswerWithin } from '../../middleware/idempotency.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/** Active keys a user may hold at once. */
const ACTIVE_KEYS_MAX = 100;

/** GET/POST /api/me/keys, DELETE /api/me/keys/:id: the user's own API keys. */
export function meKeyRoutes(services: Services): Router {
  const { db } = services.runtime.database;
  const router = new Router({ prefix: '/keys' });
  const record = (
    ctx: Context,
    action: string,
    details: Record<string, unknown>,
    on: Kysely<Database> = db,
  ) => {
    const { userId } = currentAccount(ctx);
    // No IP: the audit log cannot be erased, so it holds no personal data of users.
    return audit(on, {
      actor: `user:${userId}`,
      action,
      target: `user:${userId}`,
      details,
      requestId: ctx.state['requestId'],
    });
  };

  router.get('/', async (ctx) => {
    ctx.body = { data: await listApiKeys(db, currentAccount(ctx).userId) };
  });

  router.post('/', async (ctx) => {
    const account = currentAccount(ctx);
    const body = objectBody(ctx);
    const key = await createApiKey(db, {
      userId: account.userId,
      name: body['name'] as string | undefined,
      spendLimitUsd: body['spendLimitUsd'],
      allowedModels: body['allowedModels'],
      maxActive: ACTIVE_KEYS_MAX,
      // Audited and answered (Idempotency-Key) in the key's transaction: a retry after a
      // crash gets this key's answer, never a second key.
      within: async (trx, created) => {
        await record(ctx, 'key.create', { keyId: created.id }, trx);
        await recordAnswerWithin(trx, ctx, 201, created);
      },
    });
    ctx.set('cache-control', 'no-store');
    ctx.status = 201;
    ctx.body = key;
  });

  router.delete('/:id', async (ctx) => {
    const account = currentAccount(ctx);
    // Audited in the revocation's transaction, once: revoking it again writes nothing.
    const result = await revokeApiKey(db, {
      userId: account.userId,
      keyId: ctx.params['id']!,
      within: (trx, revoked) => record(ctx, 'key.revoke', { keyId: revoked.id }, trx),
    });
    ctx.body = result;
  });

  return router;
}
