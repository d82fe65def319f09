import Router from '@koa/router';
import {
  parseManualEntry,
  parseReversal,
  postManualEntry,
  reverseManually,
} from '../../../billing/manualEntry.js';
import type { Services } from '../../../services.js';
import { adminAuditEvent } from '../../adminAudit.js';

/**
 * /admin/entries: manual journal entries and reversals (docs/accounting.md, "Manual entries").
 * `Idempotency-Key` is honoured by the admin middleware (a replay answers as the first time) and
 * also keys the ledger entry, so a retry that lost its answer writes nothing twice.
 */
export function adminEntryRoutes(services: Services): Router {
  const { runtime } = services;
  const router = new Router({ prefix: '/entries' });

  router.post('/', async (ctx) => {
    const request = parseManualEntry(ctx.state['body']);
    const idempotencyKey = ctx.get('idempotency-key') || undefined;
    const result = await postManualEntry(runtime, request, {
      actor: String(ctx.state['actor']),
      idempotencyKey,
      audit: ({ entryId }) =>
        adminAuditEvent(ctx, 'entry.post', `entry:${entryId}`, {
          entryId,
          description: request.description,
          postings: request.postings,
        }),
    });
    ctx.status = 201;
    ctx.body = { entryId: result.entryId };
  });

  router.post('/:id/reversal', async (ctx) => {
    const { reason } = parseReversal(ctx.state['body']);
    const idempotencyKey = ctx.get('idempotency-key') || undefined;
    const result = await reverseManually(runtime, ctx.params['id']!, reason, {
      actor: String(ctx.state['actor']),
      idempotencyKey,
      audit: ({ entryId, reversedEntryId }) =>
        adminAuditEvent(ctx, 'entry.reverse', `entry:${reversedEntryId}`, {
          entryId,
          reversedEntryId,
          reason,
        }),
    });
    ctx.status = 201;
    ctx.body = { entryId: result.entryId, reversedEntryId: result.reversedEntryId };
  });

  return router;
}
