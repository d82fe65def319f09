import type { TrackedAsset } from '../adapter.js';
import { checkedAssets } from '../assets.js';
import type { TronNetworkConfig } from '../config.js';
import { normalizeTronAddress } from './address.js';

/** TRX has 6 decimals (1 TRX = 1,000,000 sun). */
export const TRX_DECIMALS = 6;

/**
 * The accepted assets of a Tron network, in canonical form (base58 contracts). Refuses a
 * config the adapter could not watch safely: a token without a contract, a native asset with
 * one or with other than 6 decimals, two native assets, or two assets on one contract.
 */
export function trackedAssetsFromConfig(network: TronNetworkConfig): TrackedAsset[] {
  return checkedAssets(network, {
    nativeDecimals: TRX_DECIMALS,
    nativeName: 'TRX',
    tokenStandard: 'TRC-20',
    addressKind: 'a Tron',
    normalize: normalizeTronAddress,
  });
}
