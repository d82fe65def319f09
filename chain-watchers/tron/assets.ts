import { ChainConfigError, type TrackedAsset } from '../adapter.js';
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
  const assets = network.assets.map((asset): TrackedAsset => {
    const where = `${network.name}: asset ${asset.symbol}`;
    if (asset.native) {
      if (asset.contract !== undefined) {
        throw new ChainConfigError(`${where} is native (TRX) and must not name a contract`);
      }
      if (asset.decimals !== TRX_DECIMALS) {
        throw new ChainConfigError(
          `${where} is native: TRX has ${TRX_DECIMALS} decimals, config says ${asset.decimals}`,
        );
      }
    } else if (asset.contract === undefined) {
      throw new ChainConfigError(`${where} needs a TRC-20 contract address (or native: true)`);
    }
    let contract: string | null = null;
    if (asset.contract !== undefined) {
      try {
        contract = normalizeTronAddress(asset.contract);
      } catch {
        throw new ChainConfigError(`${where}: contract "${asset.contract}" is not a Tron address`);
      }
    }
    return {
      symbol: asset.symbol,
      currency: asset.currency ?? asset.symbol,
      native: asset.native,
      contract,
      decimals: asset.decimals,
    };
  });
  if (assets.filter((asset) => asset.native).length > 1) {
    throw new ChainConfigError(`${network.name}: more than one native asset`);
  }
  const contracts = assets.flatMap((asset) => (asset.contract ? [asset.contract] : []));
  const duplicate = contracts.find((contract, index) => contracts.indexOf(contract) !== index);
  if (duplicate) {
    throw new ChainConfigError(`${network.name}: two assets share contract ${duplicate}`);
  }
  return assets;
}
