import { createHash } from 'node:crypto';
import { TronWeb } from 'tronweb';

/**
 * Address and hash helpers of the simulator. Tron addresses travel in three spellings:
 * base58 `T...` (what people see), `41`-prefixed hex (what the HTTP API uses without
 * `visible`), and 20-byte hex (EVM words and log addresses, no prefix).
 */

export function toHex41(address: string): string {
  if (/^41[0-9a-fA-F]{40}$/.test(address)) return address.toLowerCase();
  if (/^(0x)?[0-9a-fA-F]{40}$/.test(address))
    return `41${address.replace(/^0x/, '').toLowerCase()}`;
  if (!TronWeb.isAddress(address)) throw new Error(`not a Tron address: ${address}`);
  return TronWeb.address.toHex(address).toLowerCase();
}

export function toBase58(address: string): string {
  return TronWeb.address.fromHex(toHex41(address));
}

/** The 20-byte hex form without prefix: log addresses and ABI words use it. */
export function toHex20(address: string): string {
  return toHex41(address).slice(2);
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** A deterministic, valid Tron address from a label (for accounts and contracts of a test). */
export function addressFromLabel(label: string): string {
  return toBase58(`41${sha256Hex(`tron-sim:address:${label}`).slice(0, 40)}`);
}

export function word(value: bigint): string {
  if (value < 0n) throw new Error('negative ABI word');
  return value.toString(16).padStart(64, '0');
}

export function addressWord(address: string): string {
  return toHex20(address).padStart(64, '0');
}

/** Hex of UTF-8 text, as java-tron spells messages without `visible`. */
export function utf8Hex(text: string): string {
  return Buffer.from(text, 'utf8').toString('hex');
}

/** keccak256("Transfer(address,address,uint256)") without 0x, as TronGrid writes topics. */
export const TRANSFER_TOPIC = 'ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

export const SELECTORS = {
  transfer: 'a9059cbb', // transfer(address,uint256)
  transferFrom: '23b872dd', // transferFrom(address,address,uint256)
  balanceOf: '70a08231', // balanceOf(address)
  decimals: '313ce567', // decimals()
  symbol: '95d89b41', // symbol()
  name: '06fdde03', // name()
  totalSupply: '18160ddd', // totalSupply()
  disperseToken: 'c73a2d60', // disperseToken(address,address[],uint256[])
  pay: 'c290d691', // pay(uint256): a router paying whoever its state names
  disperseEther: 'e63d38ed', // disperseEther(address[],uint256[]): TRX to recipients it names
  payoutBatch: '87480f29', // payoutBatch(uint256): TRX to recipients its storage holds
} as const;

export function selectorOf(signature: string): string {
  return TronWeb.sha3(signature, false).slice(0, 8);
}

/** ABI encoding of a string return value (offset, length, padded bytes). */
export function encodeStringResult(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  const padded = bytes.toString('hex').padEnd(Math.ceil(bytes.length / 32) * 64, '0');
  return word(32n) + word(BigInt(bytes.length)) + padded;
}
