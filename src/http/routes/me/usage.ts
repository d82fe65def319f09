import Router from '@koa/router';
import { listUsage, USAGE_CURSOR } from '../../../account/listUsage.js';
import { decodeCursor, parseLimit, parseRange, parseText } from '../../../account/params.js';
import type { Services } from '../../../services.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/** GET /api/me/usage?from&to&limit&cursor&model: usage rows, newest first. */
export function meUsageRoutes(services: Services): Router {
  const { db } = services.runtime.database;
  const router = new Router();
  router.get('/usage', async (ctx) => {
    const { userId } = currentAccount(ctx);
    const model = parseText(ctx.query['model'], 'model', 200);
    const cursor = decodeCursor(ctx.query['cursor'], USAGE_CURSOR);
    ctx.body = await listUsage(db, {
      userId,
      ...parseRange(ctx.query),
      limit: parseLimit(ctx.query['limit'], 50, 500),
      ...(model !== undefined ? { model } : {}),
      ...(cursor ? { cursor } : {}),
    });
  });
  return router;
}
