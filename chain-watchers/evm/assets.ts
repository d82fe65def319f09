import { getAddress } from 'viem';
import type { TrackedAsset } from '../adapter.js';
import { checkedAssets } from '../assets.js';
import type { EvmNetworkConfig } from '../config.js';

/** Every EVM chain's native coin (ETH, BNB, POL...) has 18 decimals. */
export const EVM_NATIVE_DECIMALS = 18;

/**
 * Canonical EVM address: checksum-validated when mixed-case, then lower-case.
 * Throws on anything that is not a 20-byte hex address.
 *
 * @example normalizeEvmAddress('0xdAC17F958D2ee523a2206206994597C13D831ec7') // '0xdac17f...1ec7'
 */
export function normalizeEvmAddress(address: string): string {
  if (!/^0x[0-9a-fA-F]{40}$/.test(address)) throw new InvalidEvmAddressError(address);
  const digits = address.slice(2);
  // EIP-55: all lower or all upper case carries no checksum; mixed case must carry a valid
  // one, so a mistyped address is refused instead of watched.
  const unchecked = digits === digits.toLowerCase() || digits === digits.toUpperCase();
  if (!unchecked && getAddress(address) !== address) throw new InvalidEvmAddressError(address);
  return address.toLowerCase();
}

export class InvalidEvmAddressError extends Error {
  override name = 'InvalidEvmAddressError';
  readonly code = 'invalid_address';
  constructor(readonly address: string) {
    super(`"${address.slice(0, 64)}" is not an EVM address (0x and 40 hex digits, valid checksum)`);
  }
}

/**
 * The accepted assets of an EVM network, in canonical form. Refuses a config the adapter
 * could not watch safely: a token without a contract, a native asset with one, two native
 * assets, or two assets on one contract.
 */
export function trackedAssetsFromConfig(network: EvmNetworkConfig): TrackedAsset[] {
  return checkedAssets(network, {
    nativeDecimals: EVM_NATIVE_DECIMALS,
    nativeName: 'an EVM coin',
    tokenStandard: 'ERC-20',
    addressKind: 'an EVM',
    normalize: normalizeEvmAddress,
  });
}
