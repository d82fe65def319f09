import Koa from 'koa';
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { errorMiddleware } from './errors.js';
import { requestContext } from './requestId.js';
import { adminRoutes } from './routes/admin/index.js';
import { authRoutes } from './routes/auth.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { healthRoutes } from './routes/health.js';
import { meRoutes } from './routes/me/index.js';
import { metricsRoutes } from './routes/metrics.js';
import { openapiRoutes } from './routes/openapi.js';
import { v1Routes } from './routes/v1.js';

export interface HttpAppOptions {
  isShuttingDown?: () => boolean;
}

/** The Koa app: request id and errors first, then one router per resource. */
export function createHttpApp(services: Services, options: HttpAppOptions = {}): Koa {
  const { runtime } = services;
  const app = new Koa({ proxy: runtime.config.http.trustProxy });
  app.silent = true;
  app.use(requestContext(runtime.logger, runtime.metrics));
  app.use(securityHeaders);
  app.use(errorMiddleware);
  const routers: Router[] = [
    healthRoutes(runtime, options.isShuttingDown),
    metricsRoutes(runtime.metrics, runtime.config.metricsToken),
    openapiRoutes(),
    v1Routes(services),
    adminRoutes(services),
    authRoutes(services),
    meRoutes(services),
    dashboardRoutes(services),
  ];
  for (const router of routers) {
    app.use(router.routes());
    app.use(router.allowedMethods());
  }
  return app;
}

/**
 * On every answer, errors included: never sniffed into another type (a JSON answer carrying a
 * user's key name or first name is never read as a page), nothing active in it and never in
 * a frame. The dashboard's page and QR code set their own policy over this one.
 */
async function securityHeaders(ctx: Koa.Context, next: Koa.Next): Promise<void> {
  ctx.set('x-content-type-options', 'nosniff');
  ctx.set('content-security-policy', "default-src 'none'; frame-ancestors 'none'");
  await next();
}
