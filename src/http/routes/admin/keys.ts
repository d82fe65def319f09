import Router from '@koa/router';
import { z } from 'zod';
import { audit } from '../../../audit.js';
import { badRequest } from '../../../errors.js';
import { keyChangeDetails, updateApiKey } from '../../../keys/updateApiKey.js';
import type { Services } from '../../../services.js';
import { adminAuditEvent } from '../../adminAudit.js';
import { objectBody } from '../../objectBody.js';

/**
 * The fields a key's change may carry; their values are checked as at creation (the same
 * functions, the same codes), so only the body's shape is checked here.
 */
const keyChangeSchema = z.strictObject({
  spendLimitUsd: z.unknown().optional(),
  allowedModels: z.unknown().optional(),
});

/** /admin/keys/:id: change a key's spend limit or model list, by key id alone. */
export function adminKeyRoutes(services: Services): Router {
  const { db } = services.runtime.database;
  const router = new Router({ prefix: '/keys' });

  // Audited in the change's transaction, once: the same values again write nothing. By key id
  // and the values only: a key's name can name the person, and the audit log outlives erasure.
  router.patch('/:id', async (ctx) => {
    const parsed = keyChangeSchema.safeParse(objectBody(ctx));
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.code === 'unrecognized_keys' ? issue.keys[0] : undefined;
      throw badRequest(
        `${field === undefined ? 'the body' : `unknown field ${field}`}: a key's change is {"spendLimitUsd"?, "allowedModels"?}`,
        field ?? null,
      );
    }
    ctx.body = await updateApiKey(db, {
      keyId: ctx.params['id']!,
      ...('spendLimitUsd' in parsed.data ? { spendLimitUsd: parsed.data.spendLimitUsd } : {}),
      ...('allowedModels' in parsed.data ? { allowedModels: parsed.data.allowedModels } : {}),
      within: (trx, change) =>
        audit(
          trx,
          adminAuditEvent(ctx, 'key.update', `user:${change.userId}`, keyChangeDetails(change)),
        ),
    });
  });

  return router;
}
