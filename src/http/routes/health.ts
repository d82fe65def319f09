import Router, { type RouterContext } from '@koa/router';
import { sql } from 'kysely';
import type { Runtime } from '../../runtime.js';

const READINESS_DATABASE_TIMEOUT_MS = 2000;

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
    // A database that does not answer (a dead host, a full pool) must not hang the probe.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), READINESS_DATABASE_TIMEOUT_MS);
    });
    try {
      const answer = await Promise.race([sql`select 1`.execute(runtime.database.db), timeout]);
      if (answer === 'timeout') {
        ctx.status = 503;
        ctx.body = { status: 'unavailable', database: 'timeout' };
      } else {
        ctx.body = { status: 'ok', database: 'ok' };
      }
    } catch {
      ctx.status = 503;
      ctx.body = { status: 'unavailable', database: 'unreachable' };
    } finally {
      clearTimeout(timer);
    }
  };
  router.get('/healthz', ready);
  router.get('/readyz', ready);
  return router;
}
