import type { LoadedConfig } from '../config/load.js';
import { AppError } from '../errors.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { startHttpRole, type HttpRole } from './http.js';
import { startWatcherRole } from './watch.js';
import { startCronRole } from './cron.js';
import { startMetricsServer, type MetricsServer } from './metricsServer.js';

/** Which roles a process runs (architecture.md: a role is a deployment choice). */
export interface RoleSelection {
  http?: boolean;
  /** `all` or a list of network names. */
  watchers?: 'all' | string[];
  cron?: boolean;
}

export interface StartedRoles {
  runtime: Runtime;
  http: HttpRole | null;
  stop(): Promise<void>;
}

export interface StartRolesParameters {
  loaded: LoadedConfig;
  roles: RoleSelection;
  port?: number;
  /** For a process without the http role: serve /metrics and the probes on this port. */
  metricsPort?: number;
}

/** Starts the asked-for roles on one runtime; `stop` shuts them down in reverse order. */
export async function startRoles(params: StartRolesParameters): Promise<StartedRoles> {
  const { loaded } = params;
  const runtime = await openRuntime({ config: loaded.config });
  const { logger, config } = runtime;
  if (!loaded.file)
    logger.info(
      'no config file: serving with no networks and no providers (see docs/operating.md)',
    );
  if (config.providers.length === 0)
    logger.info('no model providers configured: /v1 answers model_not_found');
  if (config.networks.length === 0) logger.info('no networks configured: no deposits are watched');
  if (params.roles.http && config.adminToken === undefined)
    logger.info('no adminToken configured: the admin API (/admin) is off (403 admin_disabled)');
  const stops: Array<{ role: string; stop: () => Promise<void> }> = [];
  let http: HttpRole | null = null;
  let metricsServer: MetricsServer | null = null;
  try {
    if (params.metricsPort !== undefined && !params.roles.http) {
      metricsServer = await startMetricsServer(runtime, { port: params.metricsPort });
      logger.info({ url: metricsServer.url }, `metrics listening on ${metricsServer.url}/metrics`);
    }
    if (params.roles.http) {
      http = await startHttpRole(runtime, params.port === undefined ? {} : { port: params.port });
      stops.push({ role: 'http', stop: () => http!.stop() });
      logger.info({ url: http.url }, `http listening on ${http.url}`);
    }
    const { watchers: watching } = params.roles;
    if (watching && (config.networks.length > 0 || watching !== 'all')) {
      // Networks named (`--network N`) are checked against the config even when it has none.
      const watchers = await startWatcherRole(runtime, watching);
      stops.push({ role: 'watchers', stop: () => watchers.stop() });
      logger.info({ networks: watchers.networks }, `watching ${watchers.networks.join(', ')}`);
    } else if (watching && !params.roles.http && !params.roles.cron) {
      // `lingxi watch` alone with nothing to watch would sit idle: refuse, saying why.
      throw new AppError(
        'no_networks',
        'no networks are configured: there is nothing to watch (add networks to the config file)',
      );
    }
    if (params.roles.cron) {
      const jobs = startCronRole(runtime);
      stops.push({ role: 'cron', stop: () => jobs.stop() });
    }
  } catch (error) {
    for (const { stop } of stops.reverse()) await stop().catch(() => {});
    await metricsServer?.stop().catch(() => {});
    await runtime.close();
    throw error;
  }
  return {
    runtime,
    http,
    async stop() {
      await stopRoles(runtime, stops, metricsServer);
    },
  };
}

/**
 * The shutdown order: every role stops taking work at once (http: readiness 503, then no
 * new connections; watchers: no next iteration; cron: no next run) and finishes what it
 * has (requests and stream settlements, the current iteration, the jobs running); then the
 * ledger's batcher drains, the pool closes, and last an embedded server this process started
 * stops (runtime.close).
 */
async function stopRoles(
  runtime: Runtime,
  stops: ReadonlyArray<{ role: string; stop: () => Promise<void> }>,
  metricsServer: MetricsServer | null,
): Promise<void> {
  const { logger } = runtime;
  const started = performance.now();
  const elapsedMs = () => Math.round(performance.now() - started);
  const outcomes = await Promise.allSettled(
    stops.map(async ({ role, stop }) => {
      await stop();
      logger.info({ role, elapsedMs: elapsedMs() }, `shutdown: ${role} stopped`);
    }),
  );
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'rejected')
      logger.error(
        { role: stops[i]!.role, err: outcome.reason },
        'shutdown: a role failed to stop',
      );
  });
  // Scrapes and probes keep answering until the roles have stopped.
  await metricsServer
    ?.stop()
    .catch((error: unknown) =>
      logger.error({ err: error }, 'shutdown: the metrics listener failed to stop'),
    );
  await runtime.close();
  logger.info({ elapsedMs: elapsedMs() }, 'shutdown: ledger drained, database closed');
  if (outcomes.some((outcome) => outcome.status === 'rejected'))
    throw new Error('some roles did not stop cleanly; see the log');
}
