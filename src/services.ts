import { Gateway } from './gateway/gateway.js';
import { Meter } from './gateway/meter.js';
import { syncPrices } from './gateway/pricing.js';
import { RateLimiter } from './gateway/rateLimiter.js';
import { KeyAuthenticator } from './keys/keyAuthenticator.js';
import { WorkTracker } from './lifecycle.js';
import type { Runtime } from './runtime.js';

/** The domain services the http role serves, built once on a runtime. */
export interface Services {
  runtime: Runtime;
  keys: KeyAuthenticator;
  meter: Meter;
  gateway: Gateway;
  /** Work that outlives its request (stream settlements, lost holds' releases); drained on shutdown. */
  work: WorkTracker;
  close(): Promise<void>;
}

export async function createServices(runtime: Runtime): Promise<Services> {
  const { config, database, ledger, logger, metrics } = runtime;
  const prices = await syncPrices(database.db, config.models);
  const keys = new KeyAuthenticator(database.db, database.url, logger, {
    connectTimeoutMs: config.database.connectTimeoutMs,
  });
  await keys.start();
  const work = new WorkTracker();
  const meter = new Meter(ledger, database.db, logger, undefined, { work, metrics });
  const gateway = new Gateway({
    config,
    prices,
    meter,
    rateLimiter: new RateLimiter(config.gateway.rateLimit, database.db),
    metrics,
    logger,
    work,
  });
  return {
    runtime,
    keys,
    meter,
    gateway,
    work,
    async close() {
      let drained = await work.drain(15_000);
      // Releases of lost holds still waiting for the database give up now (their holds
      // expire), before the ledger and the pool close under them.
      meter.stopReleases();
      if (!drained) drained = await work.drain(5_000);
      if (!drained)
        logger.warn(
          { pending: work.size },
          'shutdown: some calls were still settling; their holds will expire',
        );
      await keys.close();
    },
  };
}
