import type { LoadedConfig } from '../config/load.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { startHttpRole, type HttpRole } from './http.js';
import { startWatcherRole } from './watch.js';
import { startCronRole } from './cron.js';

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
  const stops: Array<() => Promise<void>> = [];
  let http: HttpRole | null = null;
  try {
    if (params.roles.http) {
      http = await startHttpRole(runtime, params.port === undefined ? {} : { port: params.port });
      stops.push(() => http!.stop());
      logger.info({ url: http.url }, `http listening on ${http.url}`);
    }
    if (params.roles.watchers && config.networks.length > 0) {
      const watchers = await startWatcherRole(runtime, params.roles.watchers);
      stops.push(() => watchers.stop());
      logger.info({ networks: watchers.networks }, `watching ${watchers.networks.join(', ')}`);
    }
    if (params.roles.cron) {
      const jobs = startCronRole(runtime);
      stops.push(() => jobs.stop());
    }
  } catch (error) {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await runtime.close();
    throw error;
  }
  return {
    runtime,
    http,
    async stop() {
      for (const stop of stops.reverse()) await stop();
      await runtime.close();
    },
  };
}
