import type { Config } from '../../config/schema.js';

/** What the dashboard may know before sign-in: how to sign in and where deposits go. */
export interface PublicConfig {
  /** The Login Widget's bot username; null when Telegram sign-in is not configured. */
  telegramBot: string | null;
  /** True when POST /api/auth/dev exists (`telegram.devSignIn`, never with a bot token). */
  devSignIn: boolean;
  networks: Array<{
    name: string;
    kind: 'evm' | 'tron';
    chainId: number | null;
    confirmations: string;
    assets: Array<{ symbol: string; decimals: number; minDeposit: string; native: boolean }>;
  }>;
}

/**
 * The public part of the configuration, for the dashboard. Built field by field from what a
 * visitor may see: never a token, RPC URL (they carry provider keys) or xpub.
 */
export function publicConfig(config: Config): PublicConfig {
  const hasBotToken = Boolean(config.telegram.botToken);
  return {
    telegramBot: hasBotToken ? (config.telegram.botUsername ?? null) : null,
    devSignIn: config.telegram.devSignIn && !hasBotToken,
    networks: config.networks.map((network) => ({
      name: network.name,
      kind: network.kind,
      chainId: network.kind === 'evm' ? network.chainId : null,
      confirmations: String(network.confirmations),
      assets: network.assets.map((asset) => ({
        symbol: asset.symbol,
        decimals: asset.decimals,
        minDeposit: asset.minDeposit,
        native: asset.native,
      })),
    })),
  };
}
