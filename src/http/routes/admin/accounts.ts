import Router from '@koa/router';
import { findUsers } from '../../../account/findUsers.js';
import { parseText } from '../../../account/params.js';
import { getAdminUserView } from '../../../account/profile.js';
import { setSuspension } from '../../../account/suspendUser.js';
import { getUserBalance } from '../../../billing/getUserBalance.js';
import { listApiKeys } from '../../../keys/apiKeys.js';
import type { Services } from '../../../services.js';
import { adminAudit } from '../../adminAudit.js';
import { objectBody } from '../../objectBody.js';

/**
 * /admin/users lookups and suspensions. Reads of a person's data are audited like changes
 * (who looked whom up, when, from where); the audit entry names the user id, not the search
 * terms.
 */
export function adminAccountRoutes(services: Services): Router {
  const { runtime } = services;
  const { db } = runtime.database;
  const router = new Router({ prefix: '/users' });
  const record = adminAudit(db);

  router.get('/', async (ctx) => {
    const telegramId = parseText(ctx.query['telegramId'], 'telegramId', 20);
    const username = parseText(ctx.query['username'], 'username', 65);
    const users = await findUsers(db, { telegramId, username });
    await record(ctx, 'user.lookup', null, {
      by: telegramId !== undefined ? 'telegramId' : 'username',
      found: users.map((u) => u.id),
    });
    ctx.body = { data: users };
  });

  router.get('/:id', async (ctx) => {
    const user = await getAdminUserView(db, ctx.params['id']!);
    const [balance, keys] = await Promise.all([
      getUserBalance(runtime.ledger, user.id),
      listApiKeys(db, user.id),
    ]);
    await record(ctx, 'user.read', `user:${user.id}`, {});
    ctx.body = { ...user, balance, keys };
  });

  for (const [path, suspended] of [
    ['/:id/suspend', true],
    ['/:id/unsuspend', false],
  ] as const) {
    router.post(path, async (ctx) => {
      const body = objectBody(ctx);
      const result = await setSuspension(db, {
        userId: ctx.params['id']!,
        suspended,
        reason: body['reason'],
        now: new Date(),
      });
      await record(ctx, suspended ? 'user.suspend' : 'user.unsuspend', `user:${result.user.id}`, {
        reason: body['reason'],
        changed: result.changed,
      });
      ctx.body = { ...result.user, changed: result.changed };
    });
  }

  return router;
}
