import { ChainConfigError, type TrackedAsset } from './adapter.js';
import type { AssetConfig } from './config.js';

/** What differs between chains when their configured assets are checked. */
export interface AssetRules {
  /** Decimals of the chain's native coin (18 on EVM chains, 6 for TRX). */
  nativeDecimals: number;
  /** How errors name the native coin and the token standard: "TRX", "TRC-20". */
  nativeName: string;
  tokenStandard: string;
  addressKind: string;
  /** Canonical form of a contract address; throws on one that is not valid. */
  normalize(address: string): string;
}

/**
 * The accepted assets of a network, in canonical form. Refuses a config a watcher could not
 * watch safely: a token without a contract, a native asset with one or with the wrong
 * decimals, two native assets, or two assets on one contract.
 */
export function checkedAssets(
  network: { name: string; assets: AssetConfig[] },
  rules: AssetRules,
): TrackedAsset[] {
  const assets = network.assets.map((asset): TrackedAsset => {
    const where = `${network.name}: asset ${asset.symbol}`;
    if (asset.native) {
      if (asset.contract !== undefined) {
        throw new ChainConfigError(
          `${where} is native (${rules.nativeName}) and must not name a contract`,
        );
      }
      if (asset.decimals !== rules.nativeDecimals) {
        throw new ChainConfigError(
          `${where} is native: ${rules.nativeName} has ${rules.nativeDecimals} decimals, config says ${asset.decimals}`,
        );
      }
    } else if (asset.contract === undefined) {
      throw new ChainConfigError(
        `${where} needs a ${rules.tokenStandard} contract address (or native: true)`,
      );
    }
    let contract: string | null = null;
    if (asset.contract !== undefined) {
      try {
        contract = rules.normalize(asset.contract);
      } catch {
        throw new ChainConfigError(
          `${where}: contract "${asset.contract}" is not ${rules.addressKind} address`,
        );
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
