import Router from '@koa/router';
import { getDepositAddresses, listDeposits } from '../../../deposits/deposits.js';
import { parseLimit, parseText, single } from '../../../account/params.js';
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
      { form: 'display', logger: runtime.logger },
    );
  });

  router.get('/deposits', async (ctx) => {
    // As /api/me/usage does: a limit that is not 1-200 is a 400, not quietly something else.
    const limit = parseLimit(ctx.query['limit'], 50, 200);
    // Given twice it is a 400, as on /api/me/usage, not quietly the first page again.
    const cursor = single(ctx.query['cursor'], 'cursor') ?? null;
    const network = parseText(ctx.query['network'], 'network', 64);
    ctx.body = await listDeposits(runtime.database.db, {
      userId: currentAccount(ctx).userId,
      limit,
      ...(network ? { network } : {}),
      cursor,
    });
  });

  return router;
}
