import { Readable } from 'node:stream';
import Router from '@koa/router';
import { parseLimit, parseRange, single } from '../../../account/params.js';
import { getStatement, statementCsv } from '../../../account/statement.js';
import { badRequest } from '../../../errors.js';
import type { Services } from '../../../services.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/** GET /api/me/statement?from&to&format=json|csv (json also: limit, cursor). */
export function meStatementRoutes(services: Services): Router {
  const { db } = services.runtime.database;
  const router = new Router();
  router.get('/statement', async (ctx) => {
    const { userId } = currentAccount(ctx);
    const range = parseRange(ctx.query);
    const format = single(ctx.query['format'], 'format') ?? 'json';
    if (format === 'csv') {
      ctx.set('content-disposition', `attachment; filename="lingxi-statement-${userId}.csv"`);
      ctx.type = 'text/csv; charset=utf-8';
      ctx.body = Readable.from(statementCsv(db, { userId, ...range }));
      return;
    }
    if (format !== 'json') throw badRequest('format must be json or csv', 'format');
    const cursor = single(ctx.query['cursor'], 'cursor');
    if (cursor !== undefined && !/^\d{1,18}$/.test(cursor))
      throw badRequest('cursor is not one this API gave out', 'cursor');
    ctx.body = await getStatement(db, {
      userId,
      ...range,
      limit: parseLimit(ctx.query['limit'], 500, 5000),
      ...(cursor !== undefined ? { cursor } : {}),
    });
  });
  return router;
}
