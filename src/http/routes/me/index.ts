import Router from '@koa/router';
import type { Services } from '../../../services.js';
import { accountAuth, restrictedKeysOnlyRead } from '../../middleware/accountAuth.js';
import { idempotency } from '../../middleware/idempotency.js';
import { jsonBody } from '../../middleware/jsonBody.js';
import { meAccountRoutes } from './account.js';
import { meDepositRoutes } from './deposits.js';
import { meKeyRoutes } from './keys.js';
import { meStatementRoutes } from './statement.js';
import { meUsageRoutes } from './usage.js';

/**
 * /api/me: the signed-in user's own account, behind an API key or a session token. Every
 * handler reads the user from ctx.state.account, never from the request: a user can only
 * ever reach their own data. POSTs honour Idempotency-Key (scoped to the user). An API key with
 * a spend limit or a model list only reads (403 `key_restricted` otherwise, before its
 * Idempotency-Key is looked at).
 */
export function meRoutes(services: Services): Router {
  const { config, database } = services.runtime;
  const router = new Router({ prefix: '/api/me' });
  router.use(
    accountAuth(services),
    restrictedKeysOnlyRead,
    jsonBody(config.http.bodyLimitBytes),
    idempotency(database.db, { leaseMs: config.http.idempotencyLeaseMs }),
  );
  for (const child of [
    meAccountRoutes(services),
    meUsageRoutes(services),
    meStatementRoutes(services),
    meKeyRoutes(services),
    meDepositRoutes(services),
  ]) {
    router.use(child.routes(), child.allowedMethods());
  }
  return router;
}
