import { bytesToHex } from 'viem';
import { publicKeyToAddress } from 'viem/accounts';
import { childPublicKey, derivationPath, parseAccountKey } from './accountKey.js';
import { decompressPublicKey } from './secp256k1.js';

export interface DerivedAddress {
  /** EVM: EIP-55 checksummed `0x...`; Tron: base58check `T...`. */
  address: string;
  /** Full BIP-44 path, such as `m/44'/60'/0'/0/7`. */
  derivationPath: string;
}

/**
 * The EVM deposit address of index `index`: `m/44'/60'/n'/0/index` under the configured
 * account-level xpub. One address serves every EVM network. Derived from public data only.
 *
 * @example
 * deriveEvmAddress(config.wallets.evmXpub, 7)
 * // { address: '0x...', derivationPath: "m/44'/60'/0'/0/7" }
 */
export function deriveEvmAddress(xpub: string, index: number): DerivedAddress {
  const key = parseAccountKey(xpub, 'evm');
  const publicKey = decompressPublicKey(childPublicKey(key, index));
  return {
    address: publicKeyToAddress(bytesToHex(publicKey)),
    derivationPath: derivationPath(key, index),
  };
}
