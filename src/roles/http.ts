import { createServer, type Server } from 'node:http';
import { createHttpApp } from '../http/app.js';
import { createServices, type Services } from '../services.js';
import type { Runtime } from '../runtime.js';
import { listen } from './listen.js';

export interface HttpRole {
  server: Server;
  url: string;
  services: Services;
  /**
   * Stops taking requests (readiness turns 503 at once; the listener closes after
   * `http.shutdownDelayMs`), lets those in flight finish (up to `graceMs`, default
   * `http.shutdownGraceMs`), waits for stream settlements, then closes.
   */
  stop(graceMs?: number): Promise<void>;
}

/** The http role: the Koa app on the configured host and port (port 0 picks a free one). */
export async function startHttpRole(
  runtime: Runtime,
  overrides: { port?: number; host?: string } = {},
): Promise<HttpRole> {
  const services = await createServices(runtime);
  let shuttingDown = false;
  const app = createHttpApp(services, { isShuttingDown: () => shuttingDown });
  const handle = app.callback();
  const server = createServer((req, res) => {
    // While shutting down, every answer closes its connection: clients reconnect elsewhere.
    if (shuttingDown) res.setHeader('connection', 'close');
    void handle(req, res);
  });
  server.keepAliveTimeout = 65_000;
  const host = overrides.host ?? runtime.config.http.host;
  const port = overrides.port ?? runtime.config.http.port;
  let url: string;
  try {
    url = await listen(server, port, host);
  } catch (error) {
    await services.close();
    throw error;
  }
  return {
    server,
    url,
    services,
    async stop(graceMs = runtime.config.http.shutdownGraceMs) {
      const log = runtime.logger.child({ role: 'http' });
      shuttingDown = true;
      const delayMs = runtime.config.http.shutdownDelayMs;
      if (delayMs > 0) {
        log.info({ delayMs }, 'shutdown: not ready (/readyz 503); still serving for a moment');
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections close now and as soon as any other one turns idle.
      server.closeIdleConnections();
      const sweep = setInterval(() => server.closeIdleConnections(), 100);
      const graceEndsAt = Date.now() + graceMs;
      const timer = setTimeout(() => {
        log.warn({ graceMs }, 'shutdown: grace period over; cutting the connections still open');
        server.closeAllConnections();
        // Calls still waiting for upstream fail now and release their holds.
        services.gateway.stopCalls();
      }, graceMs);
      log.info({ graceMs }, 'shutdown: stopped accepting connections; finishing requests');
      await closed;
      clearInterval(sweep);
      // A call whose client left may still wait for upstream: it has the rest of the grace.
      await services.work.drain(Math.max(0, graceEndsAt - Date.now()));
      clearTimeout(timer);
      services.gateway.stopCalls();
      await services.close();
    },
  };
}
