import { createAdapters, createWatcher } from '../../chain-watchers/pipeline/createWatcher.js';
import { runWatcher } from '../../chain-watchers/pipeline/runWatcher.js';
import {
  ChainDivergedError,
  type IterationReport,
} from '../../chain-watchers/pipeline/depositWatcher.js';
import { AppError } from '../errors.js';
import type { Runtime } from '../runtime.js';

export interface WatcherRole {
  networks: string[];
  stop(): Promise<void>;
}

/**
 * The watcher role for some networks (`all`, or names): checks each network's node and
 * token decimals against the config, then follows it until stopped. Each network runs as
 * the active watcher or waits as a hot standby (one active per network, across processes).
 */
export async function startWatcherRole(
  runtime: Runtime,
  which: 'all' | string[],
  options: {
    /** After each successful iteration, once the metrics are set (tests). */
    onIteration?: (network: string, report: IterationReport) => void;
    /** After each failed iteration, once the metrics are set (tests). */
    onFailure?: (network: string, error: unknown) => void;
  } = {},
): Promise<WatcherRole> {
  const { config, logger } = runtime;
  const networks =
    which === 'all'
      ? config.networks
      : which.map((name) => {
          const network = config.networks.find((n) => n.name === name);
          if (!network)
            throw new AppError(
              'unknown_network',
              `no network named "${name}" in the config (known: ${config.networks.map((n) => n.name).join(', ') || 'none'})`,
            );
          return network;
        });
  const watcherLogger = logger.child({ role: 'watcher' });
  const adapters = createAdapters(config.networks, watcherLogger);
  for (const network of networks) {
    // Refuse to run on a node or token that disagrees with the config (wrong chain, wrong decimals).
    await adapters.get(network.name)!.verify();
  }
  const controller = new AbortController();
  const loops = networks.map((network) =>
    runWatcher(
      createWatcher({
        network,
        adapters,
        ledger: runtime.ledger,
        pool: runtime.database.pool,
        logger: watcherLogger,
      }),
      {
        pool: runtime.database.pool,
        signal: controller.signal,
        logger: watcherLogger,
        onIteration: (report) => {
          runtime.metrics.watcherHead.set({ network: network.name }, Number(report.head));
          runtime.metrics.watcherLastIteration.set({ network: network.name }, Date.now() / 1000);
          runtime.metrics.watcherChainDiverged.set({ network: network.name }, 0);
          // An iteration that priced nothing (the endpoint is behind) leaves the count as it was.
          if (report.awaitingPrice !== null)
            runtime.metrics.depositsAwaitingPrice.set(
              { network: network.name },
              report.awaitingPrice,
            );
          if (report.credited)
            runtime.metrics.depositsCredited.inc({ network: network.name }, report.credited);
          options.onIteration?.(network.name, report);
        },
        onFailure: (error) => {
          // Other failures (an RPC down) say nothing of the chain: the gauge stays as it was.
          if (error instanceof ChainDivergedError)
            runtime.metrics.watcherChainDiverged.set({ network: network.name }, 1);
          options.onFailure?.(network.name, error);
        },
      },
    ).catch((error: unknown) =>
      logger.error({ err: error, network: network.name }, 'watcher stopped'),
    ),
  );
  return {
    networks: networks.map((n) => n.name),
    async stop() {
      controller.abort();
      await Promise.all(loops);
      await Promise.all([...adapters.values()].map((a) => a.close()));
    },
  };
}
