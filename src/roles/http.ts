import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpApp } from '../http/app.js';
import { createServices, type Services } from '../services.js';
import type { Runtime } from '../runtime.js';

export interface HttpRole {
  server: Server;
  url: string;
  services: Services;
  /**
   * Stops taking requests (readiness turns 503), lets those in flight finish (up to
   * `graceMs`), waits for stream settlements, then closes.
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
  const server = createServer(app.callback());
  server.keepAliveTimeout = 65_000;
  const host = overrides.host ?? runtime.config.http.host;
  const port = overrides.port ?? runtime.config.http.port;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    await services.close();
    throw error;
  }
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  return {
    server,
    url,
    services,
    async stop(graceMs = 10_000) {
      shuttingDown = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
      await services.close();
    },
  };
}
