import Router from '@koa/router';
import { audit } from '../../../audit.js';
import { notFound } from '../../../errors.js';
import { objectBody } from '../../objectBody.js';
import { latestReconciliation, runReconciliation } from '../../../reconcile/runReconciliation.js';
import type { Services } from '../../../services.js';

/** /admin/reconciliations: run one now (answers when it is done), or read the latest. */
export function adminReconciliationRoutes(services: Services): Router {
  const { runtime } = services;
  const router = new Router({ prefix: '/reconciliations' });
  router.post('/', async (ctx) => {
    const body = objectBody(ctx) as { networks?: unknown };
    const networks = Array.isArray(body.networks)
      ? body.networks.filter((n): n is string => typeof n === 'string')
      : undefined;
    const run = await runReconciliation(runtime, {
      trigger: 'admin',
      ...(networks ? { networks } : {}),
    });
    await audit(runtime.database.db, {
      actor: ctx.state['actor'],
      action: 'reconciliation.run',
      target: `run:${run.runId}`,
      details: { status: run.status, findings: run.findings.length },
      ip: ctx.ip,
      requestId: ctx.state['requestId'],
    });
    ctx.status = 201;
    ctx.body = run;
  });
  router.get('/latest', async (ctx) => {
    const run = await latestReconciliation(runtime);
    if (!run) throw notFound('no reconciliation has run yet', 'no_reconciliation');
    ctx.body = run;
  });
  return router;
}
