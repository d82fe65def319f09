import { keccak256 } from 'viem';
import { childPublicKey, derivationPath, parseAccountKey } from './accountKey.js';
import { base58CheckEncode } from './base58.js';
import type { DerivedAddress } from './deriveEvmAddress.js';
import { decompressPublicKey } from './secp256k1.js';

/** Tron mainnet address prefix byte. */
const TRON_ADDRESS_PREFIX = 0x41;

/**
 * The Tron address of an uncompressed (65-byte) public key: the last 20 bytes of keccak256 of
 * the key without its 0x04 tag, prefixed with 0x41, in Base58Check (`T...`).
 */
export function tronAddressFromPublicKey(uncompressed: Uint8Array): string {
  const hash = keccak256(uncompressed.subarray(1), 'bytes');
  const payload = new Uint8Array(21);
  payload[0] = TRON_ADDRESS_PREFIX;
  payload.set(hash.subarray(12), 1);
  return base58CheckEncode(payload);
}

/**
 * The Tron deposit address of index `index`: `m/44'/195'/n'/0/index` under the configured
 * account-level xpub. Derived from public data only.
 *
 * @example
 * deriveTronAddress(config.wallets.tronXpub, 7)
 * // { address: 'T...', derivationPath: "m/44'/195'/0'/0/7" }
 */
export function deriveTronAddress(xpub: string, index: number): DerivedAddress {
  const key = parseAccountKey(xpub, 'tron');
  const publicKey = decompressPublicKey(childPublicKey(key, index));
  return {
    address: tronAddressFromPublicKey(publicKey),
    derivationPath: derivationPath(key, index),
  };
}
