import { createServer } from 'node:http';
import Koa from 'koa';
import { errorMiddleware } from '../http/errors.js';
import { healthRoutes } from '../http/routes/health.js';
import { metricsRoutes } from '../http/routes/metrics.js';
import type { Runtime } from '../runtime.js';
import { listen } from './listen.js';

export interface MetricsServer {
  url: string;
  stop(): Promise<void>;
}

/**
 * For a process without the http role (`lingxi watch`, `lingxi cron`): the same `/metrics`
 * (behind `metricsToken` when set), `/livez`, `/readyz` and `/healthz` as the http role
 * serves, on their own port, so watchers and cron can be scraped and probed too.
 */
export async function startMetricsServer(
  runtime: Runtime,
  options: { port: number; host?: string },
): Promise<MetricsServer> {
  let stopping = false;
  const app = new Koa();
  app.silent = true;
  app.use(errorMiddleware);
  for (const router of [
    healthRoutes(runtime, () => stopping),
    metricsRoutes(runtime.metrics, runtime.config.metricsToken),
  ]) {
    app.use(router.routes());
    app.use(router.allowedMethods());
  }
  const server = createServer(app.callback());
  const url = await listen(server, options.port, options.host ?? runtime.config.http.host);
  return {
    url,
    async stop() {
      stopping = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
