import { HDKey } from 'viem/accounts';
import { base58CheckDecode } from './base58.js';
import {
  InvalidAddressIndexError,
  InvalidExtendedKeyError,
  PrivateExtendedKeyRefusedError,
} from './errors.js';

/** SLIP-44 coin types of the chain families we derive deposit addresses for. */
export const COIN_TYPE = { evm: 60, tron: 195 } as const;
export type ChainFamily = keyof typeof COIN_TYPE;

const HARDENED_OFFSET = 0x8000_0000;
const XPUB_VERSION = 0x0488_b21e;
const SERIALIZED_LENGTH = 78;
/** Offset of the 33-byte key data in a serialized extended key; a private key starts with 0x00. */
const KEY_DATA_OFFSET = 45;

export interface AccountKey {
  family: ChainFamily;
  /** The account number n of `m/44'/coin'/n'`. */
  account: number;
  /** The external (receive) chain `m/44'/coin'/n'/0`, the parent of every deposit address. */
  receiveChain: HDKey;
}

/**
 * Parses the configured account-level extended public key of a chain family
 * (`m/44'/60'/n'` for EVM, `m/44'/195'/n'` for Tron) and checks it is one: Base58Check with
 * the `xpub` version, a public key, depth 3, a hardened account index. An extended private key
 * is refused loudly; the message never repeats the key.
 */
export function parseAccountKey(xpub: string, family: ChainFamily): AccountKey {
  // Parsing and deriving the receive chain is most of the cost of one address: keep the few
  // keys a process is configured with.
  const cacheKey = `${family}:${xpub}`;
  const cached = parsedKeys.get(cacheKey);
  if (cached) return cached;
  const key = parseUncached(xpub, family);
  if (parsedKeys.size >= PARSED_KEYS_MAX) parsedKeys.clear();
  parsedKeys.set(cacheKey, key);
  return key;
}

const PARSED_KEYS_MAX = 16;
const parsedKeys = new Map<string, AccountKey>();

function parseUncached(xpub: string, family: ChainFamily): AccountKey {
  const label = `the ${family === 'evm' ? 'EVM' : 'Tron'} extended public key`;
  const text = xpub.trim();
  if (text === '') throw new InvalidExtendedKeyError(`${label} is empty`);
  const payload = base58CheckDecode(text);
  if (payload === null || payload.length !== SERIALIZED_LENGTH) {
    throw new InvalidExtendedKeyError(
      `${label} is not a Base58Check extended key: expected an "xpub..." string of 111 characters`,
    );
  }
  if (payload[KEY_DATA_OFFSET] === 0x00) {
    throw new PrivateExtendedKeyRefusedError(
      `${label} is an extended PRIVATE key: configure the account's xpub; this service must never hold a private key (and that key should now be treated as exposed)`,
    );
  }
  const version = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
  if (version !== XPUB_VERSION) {
    throw new InvalidExtendedKeyError(
      `${label} has version 0x${version.toString(16).padStart(8, '0')}; expected a mainnet "xpub" (0x0488b21e), not a ypub/zpub/tpub`,
    );
  }
  let key: HDKey;
  try {
    key = HDKey.fromExtendedKey(text);
  } catch (error) {
    throw new InvalidExtendedKeyError(`${label} does not decode: ${(error as Error).message}`);
  }
  const coin = COIN_TYPE[family];
  if (key.depth !== 3) {
    throw new InvalidExtendedKeyError(
      `${label} is at depth ${key.depth}; expected the account level m/44'/${coin}'/0' (depth 3)`,
    );
  }
  if (key.index < HARDENED_OFFSET) {
    throw new InvalidExtendedKeyError(
      `${label} is not a hardened account key; expected the account level m/44'/${coin}'/0'`,
    );
  }
  return { family, account: key.index - HARDENED_OFFSET, receiveChain: key.deriveChild(0) };
}

/** Checks a deposit address index: an integer in [0, 2^31) (non-hardened BIP-32 child). */
export function assertAddressIndex(index: number): void {
  if (!Number.isSafeInteger(index) || index < 0 || index >= HARDENED_OFFSET) {
    throw new InvalidAddressIndexError(
      `address index must be an integer from 0 to ${HARDENED_OFFSET - 1}, got ${String(index)}`,
    );
  }
}

/** The BIP-44 path of a deposit address, such as `m/44'/195'/0'/0/7`. */
export function derivationPath(key: AccountKey, index: number): string {
  return `m/44'/${COIN_TYPE[key.family]}'/${key.account}'/0/${index}`;
}

/** The compressed (33-byte) public key of child `index` of the receive chain. */
export function childPublicKey(key: AccountKey, index: number): Uint8Array {
  assertAddressIndex(index);
  const publicKey = key.receiveChain.deriveChild(index).publicKey;
  if (publicKey === null) throw new Error('BIP-32 derivation produced no public key');
  return publicKey;
}
