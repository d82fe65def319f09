import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

const CLIENT_ID = /^[A-Za-z0-9._:-]{8,128}$/;

/** Gives each request an id (the client's if it sent a sane one), a child logger, and a log line. */
export function requestContext(logger: Logger, metrics: Metrics) {
  return async (ctx: Context, next: Next): Promise<void> => {
    const offered = ctx.get('x-request-id');
    const requestId = CLIENT_ID.test(offered) ? offered : `req_${randomUUID().replaceAll('-', '')}`;
    ctx.state['requestId'] = requestId;
    ctx.state['log'] = logger.child({ requestId });
    ctx.set('x-request-id', requestId);
    const started = performance.now();
    try {
      await next();
    } finally {
      const durationMs = Math.round((performance.now() - started) * 100) / 100;
      const route = (ctx as { _matchedRoute?: unknown })._matchedRoute;
      metrics.httpRequests.inc({
        method: ctx.method,
        route: typeof route === 'string' ? route : 'unmatched',
        status: String(ctx.status),
      });
      ctx.state['log'].info(
        { method: ctx.method, path: ctx.path, status: ctx.status, durationMs },
        'request',
      );
    }
  };
}
