import type { LoadedConfig } from '../config/load.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { startHttpRole, type HttpRole } from './http.js';

export interface StartedRoles {
  runtime: Runtime;
  http: HttpRole | null;
  stop(): Promise<void>;
}

export interface StartRolesParameters {
  loaded: LoadedConfig;
  roles: { http?: boolean };
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
  let http: HttpRole | null = null;
  try {
    if (params.roles.http) {
      http = await startHttpRole(runtime, params.port === undefined ? {} : { port: params.port });
      logger.info({ url: http.url }, `http listening on ${http.url}`);
    }
  } catch (error) {
    await runtime.close();
    throw error;
  }
  return {
    runtime,
    http,
    async stop() {
      await http?.stop();
      await runtime.close();
    },
  };
}
