import OpenAI from 'openai';
import { afterAll, beforeAll } from 'vitest';
import { Decimal } from '../../ledger/index.js';
import type { ConfigInput } from '../../src/config/load.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { startTestService, type TestService } from '../support/service.js';
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
