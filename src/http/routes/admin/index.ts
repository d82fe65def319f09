import Router from '@koa/router';
import type { Services } from '../../../services.js';
import { requireAdmin } from '../../middleware/auth.js';
import { idempotency } from '../../middleware/idempotency.js';
import { jsonBody } from '../../middleware/jsonBody.js';
import { adminAccountRoutes } from './accounts.js';
import { adminAuditLogRoutes } from './auditLog.js';
import { adminEntryRoutes } from './entries.js';
import { adminExportRoutes } from './exports.js';
import { adminKeyRoutes } from './keys.js';
import { adminLedgerRoutes } from './ledger.js';
import { adminReconciliationRoutes } from './reconciliations.js';
import { adminUserRoutes } from './users.js';

/** /admin: the operator's API, behind the admin token; every POST honours Idempotency-Key. */
export function adminRoutes(services: Services): Router {
  const { config, database } = services.runtime;
  const router = new Router({ prefix: '/admin' });
  router.use(
    requireAdmin(config.adminToken),
    jsonBody(config.http.bodyLimitBytes),
    idempotency(database.db, { leaseMs: config.http.idempotencyLeaseMs }),
  );
  for (const child of [
    adminUserRoutes(services),
    adminKeyRoutes(services),
    adminLedgerRoutes(services),
    adminEntryRoutes(services),
    adminAccountRoutes(services),
    adminAuditLogRoutes(services),
    adminExportRoutes(services),
    adminReconciliationRoutes(services),
  ]) {
    router.use(child.routes(), child.allowedMethods());
  }
  return router;
}
