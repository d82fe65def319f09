import Router from '@koa/router';
import type { Context } from 'koa';
import { badRequest } from '../../../errors.js';
import { parseJournalFilter } from '../../../exports/journalFilter.js';
import { streamSealsJsonl } from '../../../exports/sealsJsonl.js';
import { readableFromFirstChunk } from '../../../exports/sinks.js';
import { streamStatementCsv } from '../../../exports/statementCsv.js';
import {
  JOURNAL_FORMATS,
  JOURNAL_MEDIA,
  streamJournal,
  type JournalFormat,
} from '../../../exports/streamJournal.js';
import { streamTrialBalanceCsv } from '../../../exports/trialBalanceCsv.js';
import type { Services } from '../../../services.js';
import { adminAudit } from '../../adminAudit.js';
import { requireUser } from '../../../users/createUser.js';

/**
 * /admin/exports: the journal (csv, jsonl, hledger, beancount), the trial balance, a
 * user's statement and the seal chain, streamed. Each export is recorded in the audit log.
 */
export function adminExportRoutes(services: Services): Router {
  const { database } = services.runtime;
  const router = new Router({ prefix: '/exports' });
  const audited = adminAudit(database.db);
  const record = (ctx: Context, action: string, details: Record<string, unknown>) =>
    audited(ctx, action, null, details);

  router.get('/journal', async (ctx) => {
    const format = query(ctx, 'format');
    if (!JOURNAL_FORMATS.includes(format as JournalFormat)) {
      throw badRequest(`format must be one of ${JOURNAL_FORMATS.join(', ')}`, 'format');
    }
    const filter = parseJournalFilter({
      from: query(ctx, 'from'),
      to: query(ctx, 'to'),
      account: query(ctx, 'account'),
      basis: query(ctx, 'basis'),
    });
    const media = JOURNAL_MEDIA[format as JournalFormat];
    await record(ctx, 'export.journal', { format, ...filter });
    const body = await readableFromFirstChunk(
      streamJournal(database.unbounded.pool, { format: format as JournalFormat, filter }),
    );
    send(ctx, media.contentType, `lingxi-journal.${media.extension}`, body);
  });

  router.get('/trial-balance', async (ctx) => {
    const filter = parseJournalFilter({ to: query(ctx, 'to'), basis: query(ctx, 'basis') });
    await record(ctx, 'export.trial_balance', { ...filter });
    const body = await readableFromFirstChunk(
      streamTrialBalanceCsv(database.unbounded.pool, {
        ...(filter.to !== undefined ? { to: filter.to } : {}),
        ...(filter.basis !== undefined ? { basis: filter.basis } : {}),
      }),
    );
    send(ctx, 'text/csv; charset=utf-8', 'lingxi-trial-balance.csv', body);
  });

  router.get('/statement', async (ctx) => {
    const userId = query(ctx, 'user');
    if (userId === undefined) throw badRequest('user is required', 'user');
    const user = await requireUser(database.db, userId);
    const filter = parseJournalFilter({ from: query(ctx, 'from'), to: query(ctx, 'to') });
    await record(ctx, 'export.statement', { userId: user.id, ...filter });
    const body = await readableFromFirstChunk(
      streamStatementCsv(database.unbounded.pool, {
        userId: user.id,
        ...(filter.from !== undefined ? { from: filter.from } : {}),
        ...(filter.to !== undefined ? { to: filter.to } : {}),
      }),
    );
    send(ctx, 'text/csv; charset=utf-8', `lingxi-statement-${user.id}.csv`, body);
  });

  router.get('/seals', async (ctx) => {
    const body = await readableFromFirstChunk(streamSealsJsonl(database.unbounded.pool));
    send(ctx, 'application/x-ndjson; charset=utf-8', 'lingxi-seals.jsonl', body);
  });

  return router;
}

function query(ctx: Context, name: string): string | undefined {
  const value = ctx.query[name];
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw badRequest(`${name} must be given once`, name);
  return value;
}

function send(
  ctx: Context,
  contentType: string,
  filename: string,
  body: NodeJS.ReadableStream,
): void {
  ctx.status = 200;
  ctx.type = contentType;
  ctx.set('content-disposition', `attachment; filename="${filename}"`);
  ctx.set('cache-control', 'no-store');
  ctx.body = body;
}
