import { PostgresLedger } from '../ledger/index.js';
import { currencyTable } from './config/load.js';
import type { Config } from './config/schema.js';
import { openDatabase, type DatabaseHandle } from './db/connect.js';
import { migrateToLatest } from './db/migrate.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics.js';

/** Everything a role needs, opened once: the composition root of the service. */
export interface Runtime {
  config: Config;
  database: DatabaseHandle;
  /** The migrations this runtime applied when it opened (none when it was told not to). */
  migrationsApplied: string[];
  ledger: PostgresLedger;
  logger: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

export interface OpenRuntimeParameters {
  config: Config;
  logger?: Logger;
  /** Apply pending migrations first (default true). */
  migrate?: boolean;
}

export async function openRuntime(params: OpenRuntimeParameters): Promise<Runtime> {
  const { config } = params;
  const logger = params.logger ?? createLogger(config.log.level);
  const database = await openDatabase({
    config,
    onLog: (line) => logger.debug({ component: 'embedded-postgres' }, line),
  });
  if (database.embedded)
    logger.info(
      { dir: config.database.embedded.dir },
      'using the embedded PostgreSQL (set DATABASE_URL to use another)',
    );
  try {
    let migrationsApplied: string[] = [];
    if (params.migrate ?? true) {
      ({ applied: migrationsApplied } = await migrateToLatest(database.unbounded.db));
      if (migrationsApplied.length > 0)
        logger.info({ applied: migrationsApplied }, 'migrations applied');
    }
    const metrics = new Metrics(async () => {
      const row = await database.db
        .selectFrom('ledger_holds')
        .select((eb) => eb.fn.countAll<string>().as('open'))
        .where('status', '=', 'pending')
        .executeTakeFirstOrThrow();
      return Number(row.open);
    });
    const ledger = new PostgresLedger({
      pool: database.pool,
      currencies: currencyTable(config),
      batchMaxSize: config.ledger.batchMaxSize,
      batchConcurrency: config.ledger.batchConcurrency,
      writeTimeoutMs: config.ledger.writeTimeoutMs,
      onBatch: (batch) => {
        metrics.ledgerBatchSize.observe(batch.size);
        metrics.ledgerBatchDuration.observe({ mode: batch.mode }, batch.durationMs / 1000);
      },
    });
    await ledger.init();
    return {
      config,
      database,
      migrationsApplied,
      ledger,
      logger,
      metrics,
      async close() {
        await ledger.close();
        await database.close();
      },
    };
  } catch (error) {
    await database.close();
    throw error;
  }
}
