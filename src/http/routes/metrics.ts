import Router from '@koa/router';
import type { Metrics } from '../../metrics.js';
import { requireMetricsToken } from '../middleware/auth.js';

/** GET /metrics: Prometheus text; behind `metricsToken` when one is configured. */
export function metricsRoutes(metrics: Metrics, metricsToken: string | undefined): Router {
  const router = new Router();
  router.get('/metrics', requireMetricsToken(metricsToken), async (ctx) => {
    ctx.set('content-type', metrics.registry.contentType);
    ctx.body = await metrics.registry.metrics();
  });
  return router;
}
