import Router from '@koa/router';
import { openApiDocument } from '../openapi.js';

/** GET /openapi.json: the OpenAPI 3.1 description of every route (src/http/openapi.ts). */
export function openapiRoutes(): Router {
  const router = new Router();
  const text = JSON.stringify(openApiDocument);
  router.get('/openapi.json', (ctx) => {
    ctx.set('cache-control', 'public, max-age=300');
    ctx.type = 'application/json; charset=utf-8';
    ctx.body = text;
  });
  return router;
}
