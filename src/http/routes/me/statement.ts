import Router from '@koa/router';
import { parseLimit, parseRange, single } from '../../../account/params.js';
import { getStatement } from '../../../account/statement.js';
import { badRequest } from '../../../errors.js';
import { readableFromFirstChunk } from '../../../exports/sinks.js';
import { streamStatementCsv } from '../../../exports/statementCsv.js';
import type { Services } from '../../../services.js';
import { currentAccount } from '../../middleware/accountAuth.js';

/**
 * GET /api/me/statement?from&to&format=json|csv (json also: limit, cursor). The CSV is the
 * exports' statement (src/exports/statementCsv.ts), the same file an operator exports.
 */
export function meStatementRoutes(services: Services): Router {
  const { db, unbounded } = services.runtime.database;
  const router = new Router();
  router.get('/statement', async (ctx) => {
    const { userId } = currentAccount(ctx);
    const range = parseRange(ctx.query);
    const format = single(ctx.query['format'], 'format') ?? 'json';
    if (format === 'csv') {
      const body = await readableFromFirstChunk(
        streamStatementCsv(unbounded.pool, {
          userId,
          ...(range.from ? { from: range.from } : {}),
          ...(range.to ? { to: range.to } : {}),
        }),
      );
      ctx.set('content-disposition', `attachment; filename="lingxi-statement-${userId}.csv"`);
      ctx.type = 'text/csv; charset=utf-8';
      ctx.body = body;
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
