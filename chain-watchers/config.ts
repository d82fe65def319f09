import { z } from 'zod';

/**
 * The `networks` part of the configuration: what a watcher follows and how.
 * It lives beside the watchers because they read it; `src/config` composes it.
 */

const decimalString = z
  .string()
  .regex(/^\d+(\.\d+)?$/, 'must be a decimal string of digits, such as "0.15"');

const positiveInt = z.number().int().positive();

const priceSourceSchema = z.union(
  [
    z.strictObject({
      // A rate of 0 would credit nothing for a real deposit: refused when the config loads.
      fixed: decimalString.refine((rate) => /[1-9]/.test(rate), 'must be above 0, such as "1"'),
    }),
    z.strictObject({
      chainlink: z.strictObject({
        network: z.string(),
        feed: z.string(),
        maxAgeS: positiveInt.default(3600),
      }),
    }),
  ],
  {
    error: 'must be {"fixed": "1"} or {"chainlink": {"network", "feed"}}',
  },
);

const assetSchema = z.strictObject({
  symbol: z.string().min(1),
  /** Ledger currency code; defaults to the symbol. */
  currency: z.string().optional(),
  contract: z.string().optional(),
  native: z.boolean().default(false),
  decimals: z.number().int().min(0).max(36),
  price: priceSourceSchema,
  /** Deposits below this amount (in the asset) are recorded as ignored. */
  minDeposit: decimalString.default('0'),
});

const confirmationsSchema = z.union([
  z.number().int().min(0),
  z.literal('finalized'),
  z.literal('solidified'),
]);

const networkCommon = {
  name: z.string().regex(/^[a-z0-9-]+$/, 'must be lower case, such as "ethereum"'),
  confirmations: confirmationsSchema,
  pollIntervalMs: positiveInt.default(4000),
  maxBlockRange: positiveInt.default(1000),
  /** How far behind its cursor the watcher re-reads block hashes to find reorgs. */
  reorgDepthMax: positiveInt.default(128),
  rpcTimeoutMs: positiveInt.default(10_000),
  rpcRetries: z.number().int().min(0).max(20).default(4),
  /** Where scanning begins on first start; defaults to the head at that moment. */
  startBlock: z.number().int().min(0).optional(),
  /** Outgoing transfers to these addresses are sweeps to our treasury. */
  treasuryAddresses: z.array(z.string()).default([]),
  /**
   * Ledger currency of the coin that pays network fees (ETH, BNB, POL, TRX). Defaults to the
   * native asset's currency when one is configured, else ETH on EVM and TRX on Tron.
   */
  nativeCurrency: z.string().optional(),
  assets: z.array(assetSchema).min(1),
};

const evmNetworkSchema = z.strictObject({
  ...networkCommon,
  kind: z.literal('evm'),
  chainId: positiveInt,
  rpcUrls: z.array(z.string().min(1)).min(1),
});

const tronNetworkSchema = z.strictObject({
  ...networkCommon,
  kind: z.literal('tron'),
  fullHost: z.string().min(1),
  /** Extra TronGrid-compatible hosts tried when the first fails. */
  fallbackHosts: z.array(z.string().min(1)).default([]),
  apiKey: z.string().optional(),
  /**
   * How a scan finds transfers: `calldata` reads the receipts of transactions that name a
   * watched address; `receipts` reads every receipt of every block with a contract call, and
   * also sees what a contract pays to an address its call data does not name.
   */
  discovery: z.enum(['calldata', 'receipts']).default('calldata'),
});

export const networkSchema = z.discriminatedUnion('kind', [evmNetworkSchema, tronNetworkSchema]);

export type NetworkConfig = z.infer<typeof networkSchema>;
export type EvmNetworkConfig = z.infer<typeof evmNetworkSchema>;
export type TronNetworkConfig = z.infer<typeof tronNetworkSchema>;
export type AssetConfig = z.infer<typeof assetSchema>;
export type PriceSourceConfig = z.infer<typeof priceSourceSchema>;

/** The currency network fees are paid in (see `nativeCurrency`). */
export function feeCurrencyOf(network: NetworkConfig): string {
  if (network.nativeCurrency) return network.nativeCurrency;
  const native = network.assets.find((a) => a.native);
  if (native) return native.currency ?? native.symbol;
  return network.kind === 'evm' ? 'ETH' : 'TRX';
}
