import { ChainConfigError } from '../adapter.js';
import type { PriceSourceConfig } from '../config.js';
import type { PriceSource } from '../prices.js';
import type { EvmAdapter } from '../evm/createEvmAdapter.js';
import { createChainlinkPriceSource } from './chainlink.js';
import { createFixedPriceSource } from './fixed.js';

export interface CreatePriceSourceParameters {
  /** The asset's `price` config. */
  price: PriceSourceConfig;
  /** The EVM adapter of a network by name (Chainlink feeds live on one); undefined if none. */
  evmAdapter: (network: string) => Pick<EvmAdapter, 'withClient'> | undefined;
}

/**
 * The PriceSource an asset's `price` config describes: `{ fixed: "1" }` or
 * `{ chainlink: { network, feed, maxAgeS } }`. Throws ChainConfigError when a Chainlink feed's
 * network is not a configured EVM network.
 *
 * @example createPriceSource({ price: asset.price, evmAdapter: (name) => adapters.get(name) })
 */
export function createPriceSource(params: CreatePriceSourceParameters): PriceSource {
  const { price } = params;
  if ('fixed' in price) return createFixedPriceSource(price.fixed);
  const { network, feed, maxAgeS } = price.chainlink;
  const chain = params.evmAdapter(network);
  if (!chain) {
    throw new ChainConfigError(
      `Chainlink feed ${feed} is on network "${network}", which is not a configured EVM network`,
    );
  }
  try {
    return createChainlinkPriceSource({ chain, feed, maxAgeS, network });
  } catch (error) {
    throw new ChainConfigError(`Chainlink feed "${feed}" on ${network}: ${String(error)}`, {
      cause: error,
    });
  }
}
