import Router from '@koa/router';
import { eraseAccount } from '../../../account/eraseAccount.js';
import { exportAccount } from '../../../account/exportAccount.js';
import { getProfileWithBalance } from '../../../account/profile.js';
import { getUserBalance } from '../../../billing/getUserBalance.js';
import { badRequest } from '../../../errors.js';
import { readableFromFirstChunk } from '../../../exports/sinks.js';
import type { Services } from '../../../services.js';
import { readJsonBody } from '../../body.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/** GET /api/me, /api/me/balance, /api/me/export; DELETE /api/me (erasure). */
export function meAccountRoutes(services: Services): Router {
  const { runtime } = services;
  const { db } = runtime.database;
  const router = new Router();

  router.get('/', async (ctx) => {
    const account = currentAccount(ctx);
    ctx.body = {
      ...(await getProfileWithBalance(db, runtime.ledger, account.userId)),
      auth: {
        via: account.via,
        ...(account.keyId ? { keyId: account.keyId } : {}),
        ...(account.sessionId ? { sessionId: account.sessionId } : {}),
      },
    };
  });

  router.get('/balance', async (ctx) => {
    ctx.body = await getUserBalance(runtime.ledger, currentAccount(ctx).userId);
  });

  router.get('/export', async (ctx) => {
    const { userId } = currentAccount(ctx);
    ctx.set('cache-control', 'no-store');
    ctx.set('content-disposition', `attachment; filename="lingxi-account-${userId}.json"`);
    ctx.type = 'application/json; charset=utf-8';
    // The first chunk in before the 200: a database that fails at once still answers an error.
    ctx.body = await readableFromFirstChunk(exportAccount(db, userId, new Date()));
  });

  router.delete('/', async (ctx) => {
    const account = currentAccount(ctx);
    const body =
      ctx.request.length === 0 || !ctx.request.length
        ? {}
        : await readJsonBody(ctx, runtime.config.http.bodyLimitBytes);
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw badRequest('send {"confirm": "erase my account"}', 'confirm', 'confirmation_required');
    ctx.body = await eraseAccount(db, runtime.ledger, {
      userId: account.userId,
      confirm: (body as Record<string, unknown>)['confirm'],
      now: new Date(),
    });
  });

  return router;
}
