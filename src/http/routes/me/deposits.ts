import Router from '@koa/router';
import { getDepositAddresses, listDeposits } from '../../../deposits/deposits.js';
import type { Services } from '../../../services.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/** GET /api/me/deposit-addresses, GET /api/me/deposits. */
export function meDepositRoutes(services: Services): Router {
  const { runtime } = services;
  const router = new Router();

  router.get('/deposit-addresses', async (ctx) => {
    ctx.body = await getDepositAddresses(
      runtime.database.db,
      runtime.config,
      currentAccount(ctx).userId,
    );
  });

  router.get('/deposits', async (ctx) => {
    const limit = ctx.query['limit'] === undefined ? undefined : Number(ctx.query['limit']);
    const cursor = typeof ctx.query['cursor'] === 'string' ? ctx.query['cursor'] : null;
    const network = typeof ctx.query['network'] === 'string' ? ctx.query['network'] : undefined;
    ctx.body = await listDeposits(runtime.database.db, {
      userId: currentAccount(ctx).userId,
      ...(limit !== undefined && Number.isInteger(limit) ? { limit } : {}),
      ...(network ? { network } : {}),
      cursor,
    });
  });

  return router;
}
