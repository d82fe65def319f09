import Router from '@koa/router';
import { listAuditLog } from '../../../account/listAuditLog.js';
import { parseLimit, parseText, single } from '../../../account/params.js';
import { audit } from '../../../audit.js';
import { badRequest } from '../../../errors.js';
import type { Services } from '../../../services.js';

/** GET /admin/audit-log?limit&cursor&target&action&actor: the append-only log, newest first. */
export function adminAuditLogRoutes(services: Services): Router {
  const { db } = services.runtime.database;
  const router = new Router();
  router.get('/audit-log', async (ctx) => {
    const cursor = single(ctx.query['cursor'], 'cursor');
    if (cursor !== undefined && !/^\d{1,18}$/.test(cursor))
      throw badRequest('cursor is not one this API gave out', 'cursor');
    const page = await listAuditLog(db, {
      limit: parseLimit(ctx.query['limit'], 100, 1000),
      cursor,
      target: parseText(ctx.query['target'], 'target', 200),
      action: parseText(ctx.query['action'], 'action', 100),
      actor: parseText(ctx.query['actor'], 'actor', 200),
    });
    // Reading the log is itself recorded, after the read so the page does not show it.
    await audit(db, {
      actor: ctx.state['actor'],
      action: 'audit_log.read',
      details: { cursor: cursor ?? null, entries: page.data.length },
      ip: ctx.ip,
      requestId: ctx.state['requestId'],
    });
    ctx.body = page;
  });
  return router;
}
