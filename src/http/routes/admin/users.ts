import Router from '@koa/router';
import { adjustBalance } from '../../../billing/adjustBalance.js';
import { getUserBalance } from '../../../billing/getUserBalance.js';
import { createApiKey, listApiKeys, revokeApiKey } from '../../../keys/apiKeys.js';
import type { Services } from '../../../services.js';
import { audit } from '../../../audit.js';
import { adminAudit, adminAuditEvent } from '../../adminAudit.js';
import { recordAnswerWithin } from '../../middleware/idempotency.js';
import { objectBody } from '../../objectBody.js';
import { createUser, requireUser } from '../../../users/createUser.js';

/** /admin/users: create users, create and revoke their keys, adjust and read balances. */
export function adminUserRoutes(services: Services): Router {
  const { runtime } = services;
  const { db } = runtime.database;
  const router = new Router({ prefix: '/users' });
  const record = adminAudit(db);

  router.post('/', async (ctx) => {
    const body = objectBody(ctx) as { telegramId?: unknown; username?: unknown };
    // Audited and answered (Idempotency-Key) in the user's transaction: a process that dies
    // after the user is in has answered, so a retry replays that answer (not 409 user_exists).
    const user = await createUser(
      db,
      {
        telegramId: body.telegramId,
        username: (body.username as string | undefined) ?? null,
      },
      {
        within: async (trx, created) => {
          await audit(
            trx,
            adminAuditEvent(ctx, 'user.create', `user:${created.id}`, {
              telegramId: String(body.telegramId),
            }),
          );
          await recordAnswerWithin(trx, ctx, 201, created);
        },
      },
    );
    ctx.status = 201;
    ctx.body = user;
  });

  router.post('/:id/keys', async (ctx) => {
    const user = await requireUser(db, ctx.params['id']!);
    const body = objectBody(ctx) as {
      name?: unknown;
      spendLimitUsd?: unknown;
      allowedModels?: unknown;
    };
    const key = await createApiKey(db, {
      userId: user.id,
      name: body.name as string | undefined,
      spendLimitUsd: body.spendLimitUsd,
      allowedModels: body.allowedModels,
      // By id only: a key's name can name the person, and the audit log outlives an erasure.
      // In the key's transaction, with the Idempotency-Key answer: a retry after a crash gets
      // this key's answer, never a second key.
      within: async (trx, created) => {
        await audit(
          trx,
          adminAuditEvent(ctx, 'key.create', `user:${user.id}`, { keyId: created.id }),
        );
        await recordAnswerWithin(trx, ctx, 201, created);
      },
    });
    // The secret, shown once: no cache may keep it.
    ctx.set('cache-control', 'no-store');
    ctx.status = 201;
    ctx.body = key;
  });

  router.get('/:id/keys', async (ctx) => {
    const user = await requireUser(db, ctx.params['id']!);
    const keys = await listApiKeys(db, user.id);
    // A key's name can name the person: reading them is audited, as `user.read` is.
    await record(ctx, 'key.list', `user:${user.id}`, {});
    ctx.body = { data: keys };
  });

  // A leaked key is revoked without suspending its owner; it stops working at once. Audited
  // in the revocation's transaction, once: revoking it again answers its time, writes nothing.
  router.delete('/:id/keys/:keyId', async (ctx) => {
    const user = await requireUser(db, ctx.params['id']!);
    ctx.body = await revokeApiKey(db, {
      userId: user.id,
      keyId: ctx.params['keyId']!,
      within: (trx, revoked) =>
        audit(trx, adminAuditEvent(ctx, 'key.revoke', `user:${user.id}`, { keyId: revoked.id })),
    });
  });

  router.post('/:id/adjustments', async (ctx) => {
    const user = await requireUser(db, ctx.params['id']!);
    const body = objectBody(ctx) as { amount?: unknown; reason?: unknown };
    const idempotencyKey = ctx.get('idempotency-key') || undefined;
    const result = await adjustBalance(runtime, {
      userId: user.id,
      amount: body.amount,
      reason: body.reason,
      idempotencyKey,
      actor: ctx.state['actor'],
      audit: ({ entryId }) =>
        adminAuditEvent(ctx, 'balance.adjust', `user:${user.id}`, {
          amount: body.amount,
          reason: body.reason,
          entryId,
        }),
    });
    ctx.status = 201;
    ctx.body = { entryId: result.entryId, balance: await getUserBalance(runtime.ledger, user.id) };
  });

  // A person's balance is their data: reading it is audited, as `user.read` is.
  router.get('/:id/balance', async (ctx) => {
    const user = await requireUser(db, ctx.params['id']!);
    const balance = await getUserBalance(runtime.ledger, user.id);
    await record(ctx, 'balance.read', `user:${user.id}`, {});
    ctx.body = balance;
  });

  return router;
}
