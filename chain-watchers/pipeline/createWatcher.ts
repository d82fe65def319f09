import type pg from 'pg';
import type { PostgresLedger } from '../../ledger/index.js';
import type { ChainAdapter } from '../adapter.js';
import type { NetworkConfig } from '../config.js';
import { createEvmAdapter, type EvmAdapter } from '../evm/createEvmAdapter.js';
import { createPriceSource } from '../prices/createPriceSource.js';
import type { PriceSource } from '../prices.js';
import { createTronAdapter } from '../tron/createTronAdapter.js';
import { DepositWatcher, type WatcherLogger } from './depositWatcher.js';

/** One adapter per configured network (Chainlink feeds may live on another network's). */
export function createAdapters(
  networks: ReadonlyArray<NetworkConfig>,
  logger: WatcherLogger,
): Map<string, ChainAdapter> {
  const adapters = new Map<string, ChainAdapter>();
  for (const network of networks) {
    adapters.set(
      network.name,
      network.kind === 'evm'
        ? createEvmAdapter(network, { logger })
        : createTronAdapter(network, { logger }),
    );
  }
  return adapters;
}

/**
 * The price source of each of a network's assets, by symbol. The watcher quotes at its own
 * network's confirming block; a Chainlink feed on another network has no such block (or an
 * unrelated one at that height), so it quotes that feed's latest round instead, still refused
 * when older than `maxAgeS` at the feed network's latest block.
 */
export function createPriceSources(
  network: NetworkConfig,
  adapters: ReadonlyMap<string, ChainAdapter>,
): Map<string, PriceSource> {
  const evmAdapter = (name: string) => {
    const adapter = adapters.get(name);
    return adapter?.kind === 'evm' ? (adapter as EvmAdapter) : undefined;
  };
  return new Map(
    network.assets.map((asset) => {
      const source = createPriceSource({ price: asset.price, evmAdapter });
      const elsewhere =
        'chainlink' in asset.price && asset.price.chainlink.network !== network.name;
      return [asset.symbol, elsewhere ? { quote: () => source.quote(null) } : source];
    }),
  );
}

export function createWatcher(params: {
  network: NetworkConfig;
  adapters: ReadonlyMap<string, ChainAdapter>;
  ledger: PostgresLedger;
  pool: pg.Pool;
  logger: WatcherLogger;
}): DepositWatcher {
  const adapter = params.adapters.get(params.network.name);
  if (!adapter) throw new Error(`no adapter for network ${params.network.name}`);
  return new DepositWatcher({
    network: params.network,
    adapter,
    ledger: params.ledger,
    pool: params.pool,
    priceSources: createPriceSources(params.network, params.adapters),
    logger: params.logger,
  });
}
