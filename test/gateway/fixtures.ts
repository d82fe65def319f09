import OpenAI from 'openai';
import { afterAll, beforeAll } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { ConfigInput } from '../../src/config/load.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { admin, startTestService, type TestService } from '../support/service.js';
import { startUpstreamStub, type UpstreamStub } from '../support/upstream-stub.js';

/** Prices with up to 12 decimals, so the arithmetic is checked where rounding would show. */
export const MODELS = {
  mini: { input: '0.15', cachedInput: '0.075', output: '0.6' },
  precise: {
    input: '0.123456789012',
    cachedInput: '0.000000000001',
    output: '3.141592653589',
    reasoning: '7.000000000007',
  },
  embed: { input: '0.02', output: '0' },
} as const;

export function gatewayConfig(
  upstreamUrl: string,
  extra: Partial<ConfigInput> = {},
): Partial<ConfigInput> {
  return {
    providers: [{ name: 'stub', baseUrl: upstreamUrl, apiKey: 'upstream-secret', timeoutMs: 1500 }],
    models: [
      {
        id: 'gpt-4o-mini',
        provider: 'stub',
        upstreamModel: 'gpt-4o-mini',
        pricePer1M: MODELS.mini,
        maxOutputTokensDefault: 256,
        maxOutputTokensLimit: 4096,
      },
      {
        id: 'precise',
        provider: 'stub',
        upstreamModel: 'o3-mini',
        pricePer1M: MODELS.precise,
        maxOutputTokensDefault: 256,
        maxOutputTokensLimit: 4096,
      },
      {
        id: 'text-embedding-3-small',
        provider: 'stub',
        upstreamModel: 'text-embedding-3-small',
        kind: 'embedding',
        pricePer1M: MODELS.embed,
      },
    ],
    ...extra,
  };
}

/** The official SDK pointed at our gateway: no retries, so each call is exactly one request. */
export function sdk(baseUrl: string, apiKey: string, options: { timeout?: number } = {}): OpenAI {
  return new OpenAI({
    baseURL: `${baseUrl}/v1`,
    apiKey,
    maxRetries: 0,
    timeout: options.timeout ?? 10_000,
    logLevel: 'off',
  });
}

/** tokens x price per 1M, exactly. Cache reads and writes are parts of the prompt. */
export function expectedCost(
  price: {
    input: string;
    cachedInput?: string;
    cacheWrite?: string;
    output: string;
    reasoning?: string;
  },
  usage: {
    prompt: number;
    cached?: number;
    cacheWrite?: number;
    completion: number;
    reasoning?: number;
  },
): Decimal {
  const cached = usage.cached ?? 0;
  const cacheWrite = usage.cacheWrite ?? 0;
  const reasoning = usage.reasoning ?? 0;
  return new Decimal(usage.prompt - cached - cacheWrite)
    .mul(price.input)
    .add(new Decimal(cached).mul(price.cachedInput ?? price.input))
    .add(new Decimal(cacheWrite).mul(price.cacheWrite ?? price.input))
    .add(new Decimal(usage.completion - reasoning).mul(price.output))
    .add(new Decimal(reasoning).mul(price.reasoning ?? price.output))
    .div(1_000_000);
}

export interface GatewayStack {
  database: TestDatabase;
  stub: UpstreamStub;
  service: TestService;
}

/**
 * For one test file (or `describe` block): a fresh database, an upstream stub, and the
 * service on them with `gatewayConfig` (changed by `configure`, if given), all torn down
 * after it. `ready` receives them once they are up.
 */
export function useGatewayStack(
  ready: (stack: GatewayStack) => void,
  configure: (config: Partial<ConfigInput>) => Partial<ConfigInput> = (config) => config,
): void {
  const stack: Partial<GatewayStack> = {};
  beforeAll(async () => {
    const database = (stack.database = await createTestDatabase());
    const stub = (stack.stub = await startUpstreamStub({ apiKey: 'upstream-secret' }));
    stack.service = await startTestService({
      databaseUrl: database.url,
      config: configure(gatewayConfig(stub.url)),
    });
    ready(stack as GatewayStack);
  });
  afterAll(async () => {
    await stack.service?.stop();
    await stack.stub?.close();
    await stack.database?.drop();
  });
}

/** Output priced only: a call that generates max_tokens costs exactly what it held. */
export const FLAT_PRICE = { input: '0', cachedInput: '0', output: '1.234567890123' } as const;

export interface SharedGateways {
  database: TestDatabase;
  stub: UpstreamStub;
  /** `count` gateway instances on the one database, as several processes would be. */
  gateways: TestService[];
}

/**
 * For one test file: a fresh database, an upstream stub, and `count` gateway instances sharing
 * them, with `gatewayConfig`'s models plus `flat` (priced FLAT_PRICE, so a budget fits exactly
 * N calls that generate max_tokens, in any order) and upstream timeouts of 15 s (many calls at
 * once on a shared machine: a slow moment must not turn into a 502). Torn down after it.
 */
export function useSharedGateways(count: number, ready: (shared: SharedGateways) => void): void {
  const shared: Partial<SharedGateways> = { gateways: [] };
  beforeAll(async () => {
    const database = (shared.database = await createTestDatabase());
    const stub = (shared.stub = await startUpstreamStub({ apiKey: 'upstream-secret' }));
    const base = gatewayConfig(stub.url);
    const config = gatewayConfig(stub.url, {
      providers: base.providers!.map((p) => ({ ...p, timeoutMs: 15_000 })),
      models: [
        ...base.models!,
        {
          id: 'flat',
          provider: 'stub',
          upstreamModel: 'gpt-4o-mini',
          pricePer1M: FLAT_PRICE,
          maxOutputTokensDefault: 256,
          maxOutputTokensLimit: 4096,
        },
      ],
    });
    for (let i = 0; i < count; i += 1)
      shared.gateways!.push(await startTestService({ databaseUrl: database.url, config }));
    ready(shared as SharedGateways);
  });
  afterAll(async () => {
    for (const gateway of shared.gateways ?? []) await gateway.stop();
    await shared.stub?.close();
    await shared.database?.drop();
  });
}

/**
 * A user's money (available and held), usage rows (`columns` of usage_records, in order) and
 * pending holds, once every call of the stack has ended (the stub idle, the service's
 * settlements drained within `drainMs`).
 */
export async function callState(
  stack: GatewayStack,
  userId: string,
  columns: string,
  drainMs = 5000,
) {
  const { database, stub, service } = stack;
  await stub.waitForIdle();
  await service.http.services.work.drain(drainMs);
  const { body } = await admin<{ available: string; held: string }>(
    service,
    'GET',
    `/users/${userId}/balance`,
  );
  const { rows } = await database.pool.query(
    `select ${columns} from usage_records where user_id = $1 order by id`,
    [userId],
  );
  const pending = await database.pool.query<{ n: number }>(
    `select count(*)::int as n from ledger_holds h join ledger_accounts a on a.id = h.debit_account_id
      where a.code = $1 and h.status = 'pending'`,
    [`liabilities:customers:${userId}`],
  );
  return { available: body.available, held: body.held, pendingHolds: pending.rows[0]!.n, rows };
}
