import Router, { type RouterContext } from '@koa/router';
import { sql } from 'kysely';
import type { Runtime } from '../../runtime.js';

/** Liveness (`/livez`: the process answers), readiness and health (`/readyz`, `/healthz`: the database answers). */
export function healthRoutes(
  runtime: Pick<Runtime, 'database'>,
  isShuttingDown: () => boolean = () => false,
): Router {
  const router = new Router();
  router.get('/livez', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  const ready = async (ctx: RouterContext) => {
    if (isShuttingDown()) {
      ctx.status = 503;
      ctx.body = { status: 'shutting_down' };
      return;
    }
    try {
      await sql`select 1`.execute(runtime.database.db);
      ctx.body = { status: 'ok', database: 'ok' };
    } catch {
      ctx.status = 503;
      ctx.body = { status: 'unavailable', database: 'unreachable' };
    }
  };
  router.get('/healthz', ready);
  router.get('/readyz', ready);
  return router;
}
