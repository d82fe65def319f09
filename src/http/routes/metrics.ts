import Router from '@koa/router';
import type { Metrics } from '../../metrics.js';

/** GET /metrics: Prometheus text. */
export function metricsRoutes(metrics: Metrics): Router {
  const router = new Router();
  router.get('/metrics', async (ctx) => {
    ctx.set('content-type', metrics.registry.contentType);
    ctx.body = await metrics.registry.metrics();
  });
  return router;
}
