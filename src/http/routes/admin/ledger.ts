import Router from '@koa/router';
import type { Services } from '../../../services.js';
import { trialBalanceJson } from '../../../billing/trialBalance.js';

/** /admin ledger reports. */
export function adminLedgerRoutes(services: Services): Router {
  const router = new Router();
  router.get('/trial-balance', async (ctx) => {
    ctx.body = trialBalanceJson(await services.runtime.ledger.trialBalance());
  });
  return router;
}
