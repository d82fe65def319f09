import Koa from 'koa';
import type { Runtime } from '../runtime.js';
import { errorMiddleware } from './errors.js';
import { requestContext } from './requestId.js';
import { healthRoutes } from './routes/health.js';

export interface HttpAppOptions {
  isShuttingDown?: () => boolean;
}

/** The Koa app: request id and errors first, then one router per resource. */
export function createHttpApp(runtime: Runtime, options: HttpAppOptions = {}): Koa {
  const app = new Koa({ proxy: runtime.config.http.trustProxy });
  app.silent = true;
  app.use(requestContext(runtime.logger));
  app.use(errorMiddleware);
  const health = healthRoutes(runtime, options.isShuttingDown);
  app.use(health.routes());
  app.use(health.allowedMethods());
  return app;
}
