import { PassThrough } from 'node:stream';
import Router from '@koa/router';
import type { Context } from 'koa';
import type { GatewayCall, GatewayResponse } from '../../gateway/gateway.js';
import type { Services } from '../../services.js';
import { readJsonBody } from '../body.js';
import { requireApiKey } from '../middleware/auth.js';

/** /v1: the OpenAI-compatible gateway. */
export function v1Routes(services: Services): Router {
  const { gateway, keys, runtime, work } = services;
  const limit = runtime.config.http.bodyLimitBytes;
  const router = new Router({ prefix: '/v1' });
  router.use(requireApiKey(keys));

  router.get('/models', (ctx) => {
    ctx.body = gateway.listModels(ctx.state['caller']);
  });
  // A call holds money from its hold to its settlement or release: a shutdown waits for it
  // (and so does the pool it needs), also once its client is gone.
  router.post('/chat/completions', async (ctx) => {
    const call = await toCall(ctx, limit);
    respond(ctx, await work.track(gateway.chatCompletion(call)));
  });
  router.post('/embeddings', async (ctx) => {
    const call = await toCall(ctx, limit);
    respond(ctx, await work.track(gateway.embedding(call)));
  });
  return router;
}

async function toCall(ctx: Context, limit: number): Promise<GatewayCall> {
  const startedAt = new Date();
  const body = await readJsonBody(ctx, limit);
  const controller = new AbortController();
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) controller.abort();
  });
  return {
    requestId: ctx.state['requestId'],
    caller: ctx.state['caller'],
    body,
    clientIp: ctx.ip || null,
    userAgent: ctx.get('user-agent') || null,
    startedAt,
    clientSignal: controller.signal,
  };
}

function respond(ctx: Context, response: GatewayResponse): void {
  ctx.set(response.headers);
  if (response.kind === 'json') {
    ctx.status = response.status;
    ctx.body = response.body;
    return;
  }
  const sink = new PassThrough();
  ctx.status = 200;
  ctx.body = sink;
  void response.pump(sink);
}
