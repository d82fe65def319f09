import Router from '@koa/router';
import { audit } from '../../../audit.js';
import { badRequest, notFound } from '../../../errors.js';
import { objectBody } from '../../objectBody.js';
import { acknowledgeFinding } from '../../../reconcile/acknowledgeFinding.js';
import { latestReconciliation, runReconciliation } from '../../../reconcile/runReconciliation.js';
import type { Services } from '../../../services.js';

/**
 * /admin/reconciliations: run one now (answers when it is done), read the latest, or
 * acknowledge one of its findings (a reversed deposit or an outflow an operator has decided on).
 */
export function adminReconciliationRoutes(services: Services): Router {
  const { runtime } = services;
  const router = new Router({ prefix: '/reconciliations' });
  router.post('/', async (ctx) => {
    const networks = parseNetworks(objectBody(ctx)['networks']);
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
  router.post('/acknowledgements', async (ctx) => {
    const body = objectBody(ctx);
    const fingerprint = body['fingerprint'];
    const reason = body['reason'];
    if (typeof fingerprint !== 'string' || !fingerprint)
      throw badRequest(
        "fingerprint must be a finding's fingerprint, as a run lists it",
        'fingerprint',
      );
    if (typeof reason !== 'string') throw badRequest('reason must say why, as text', 'reason');
    const acknowledged = await acknowledgeFinding(runtime, {
      fingerprint,
      reason,
      audit: { actor: ctx.state['actor'], ip: ctx.ip, requestId: ctx.state['requestId'] },
    });
    ctx.status = 201;
    ctx.body = acknowledged;
  });
  return router;
}

/** `networks`: absent (or null) for all of them, else a list of names, never silently narrowed. */
function parseNetworks(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || !value.every((name) => typeof name === 'string'))
    throw badRequest('networks must be a list of network names, such as ["tron"]', 'networks');
  return value;
}
