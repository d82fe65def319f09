import { networkSchema, type EvmNetworkConfig } from '../../../chain-watchers/config.js';

export interface DevnetAssetInput {
  symbol: string;
  contract?: string;
  native?: boolean;
  decimals: number;
  price?: { fixed: string };
}

/**
 * An EVM network config for the devnet, parsed by the real schema (so defaults apply).
 * Short timeouts and few retries keep failure tests quick.
 */
export function devnetNetworkConfig(params: {
  rpcUrls: string[];
  assets: DevnetAssetInput[];
  chainId?: number;
  name?: string;
  rpcTimeoutMs?: number;
  rpcRetries?: number;
}): EvmNetworkConfig {
  const parsed = networkSchema.parse({
    kind: 'evm',
    name: params.name ?? 'devnet',
    chainId: params.chainId ?? 1337,
    rpcUrls: params.rpcUrls,
    confirmations: 2,
    rpcTimeoutMs: params.rpcTimeoutMs ?? 2_000,
    rpcRetries: params.rpcRetries ?? 1,
    assets: params.assets.map((asset) => ({ price: { fixed: '1' }, ...asset })),
  });
  if (parsed.kind !== 'evm') throw new Error('unreachable: kind is evm');
  return parsed;
}
