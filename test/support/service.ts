import { parseConfig, type ConfigInput } from '../../src/config/load.js';
import { startHttpRole, type HttpRole } from '../../src/roles/http.js';
import { openRuntime, type Runtime } from '../../src/runtime.js';
import { createLogger } from '../../src/log.js';

export interface TestService {
  url: string;
  runtime: Runtime;
  http: HttpRole;
  stop(): Promise<void>;
}

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** The http role of the real service on a test database, on a free port. */
export async function startTestService(params: {
  databaseUrl: string;
  config?: Partial<ConfigInput>;
}): Promise<TestService> {
  const config = parseConfig(
    {
      adminToken: ADMIN_TOKEN,
      log: { level: process.env['LINGXI_TEST_LOG'] ?? 'silent' },
      ...params.config,
      database: { url: params.databaseUrl, poolSize: 10, ...params.config?.database },
    },
    {},
  );
  const runtime = await openRuntime({ config, logger: createLogger(config.log.level) });
  const http = await startHttpRole(runtime, { port: 0, host: '127.0.0.1' });
  return {
    url: http.url,
    runtime,
    http,
    async stop() {
      await http.stop(1000);
      await runtime.close();
    },
  };
}

/** Calls the admin API. */
export async function admin<T = unknown>(
  service: { url: string },
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const response = await fetch(`${service.url}/admin${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as T };
}

/** A user with an API key and a balance, made through the admin API. */
export async function userWithKey(
  service: { url: string },
  params: { telegramId: number; balance?: string; key?: Record<string, unknown> },
) {
  const user = await admin<{ id: string }>(service, 'POST', '/users', {
    telegramId: params.telegramId,
  });
  if (user.status !== 201) throw new Error(`creating a user: ${JSON.stringify(user.body)}`);
  if (params.balance) {
    const credit = await admin(service, 'POST', `/users/${user.body.id}/adjustments`, {
      amount: params.balance,
      reason: 'test funds',
    });
    if (credit.status !== 201) throw new Error(`funding: ${JSON.stringify(credit.body)}`);
  }
  const key = await admin<{ id: string; key: string }>(
    service,
    'POST',
    `/users/${user.body.id}/keys`,
    params.key ?? {},
  );
  if (key.status !== 201) throw new Error(`creating a key: ${JSON.stringify(key.body)}`);
  return { userId: user.body.id, keyId: key.body.id, apiKey: key.body.key };
}
