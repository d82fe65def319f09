import { TronWeb } from 'tronweb';

/**
 * Canonical Tron address: base58check `T...`. Accepts base58 (checksum and 0x41 prefix
 * checked) or the `41`-prefixed hex the HTTP API uses; refuses `0x` EVM-style hex, which
 * would make an EVM address silently look like a Tron one.
 *
 * @example normalizeTronAddress('41a614f803b6fd780986a42c78ec9c7f77e6ded13c') // 'TR7NHq...Lj6t'
 */
export function normalizeTronAddress(address: string): string {
  if (/^41[0-9a-fA-F]{40}$/.test(address)) {
    return TronWeb.address.fromHex(address.toLowerCase());
  }
  if (/^T[1-9A-HJ-NP-Za-km-z]{33}$/.test(address) && TronWeb.isAddress(address)) return address;
  throw new InvalidTronAddressError(address);
}

/** Base58 address of a 20-byte hex value (a log address or the low 20 bytes of an ABI word). */
export function tronAddressFromHex20(hex20: string): string {
  return TronWeb.address.fromHex(`41${hex20.toLowerCase()}`);
}

/** The 20-byte lower-case hex (no prefix) of a canonical address: how ABI words and logs spell it. */
export function hex20OfTronAddress(address: string): string {
  return TronWeb.address.toHex(address).slice(2).toLowerCase();
}

export class InvalidTronAddressError extends Error {
  override name = 'InvalidTronAddressError';
  readonly code = 'invalid_address';
  constructor(readonly address: string) {
    super(
      `"${address.slice(0, 64)}" is not a Tron address (base58 "T..." with a valid checksum, or 41 and 40 hex digits)`,
    );
  }
}
