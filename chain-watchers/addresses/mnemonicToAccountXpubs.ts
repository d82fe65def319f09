import { createHash, pbkdf2Sync } from 'node:crypto';
import { HDKey, english } from 'viem/accounts';
import { COIN_TYPE } from './accountKey.js';
import { InvalidMnemonicError } from './errors.js';

export interface MnemonicToAccountXpubsOptions {
  /** BIP-39 passphrase ("25th word"); empty by default. */
  passphrase?: string;
  /** Account number n of `m/44'/coin'/n'`; 0 by default. */
  account?: number;
}

export interface AccountXpubs {
  /** `m/44'/60'/n'`: what `wallets.evmXpub` expects. */
  evmXpub: string;
  /** `m/44'/195'/n'`: what `wallets.tronXpub` expects. */
  tronXpub: string;
}

/**
 * The two account-level extended public keys of a BIP-39 mnemonic. For tests, the demo and
 * offline wallet setup only: the service itself is configured with the xpubs and never sees a
 * mnemonic or a private key.
 *
 * @example
 * mnemonicToAccountXpubs('test test test test test test test test test test test junk')
 * // { evmXpub: 'xpub6...', tronXpub: 'xpub6...' }
 */
export function mnemonicToAccountXpubs(
  mnemonic: string,
  options: MnemonicToAccountXpubsOptions = {},
): AccountXpubs {
  const account = options.account ?? 0;
  if (!Number.isSafeInteger(account) || account < 0 || account >= 0x8000_0000) {
    throw new InvalidMnemonicError(`account must be an integer from 0 to 2147483647`);
  }
  const words = mnemonic.normalize('NFKD').trim().split(/\s+/);
  assertValidMnemonic(words);
  const seed = pbkdf2Sync(
    words.join(' '),
    `mnemonic${(options.passphrase ?? '').normalize('NFKD')}`,
    2048,
    64,
    'sha512',
  );
  const master = HDKey.fromMasterSeed(seed);
  const xpubOf = (coin: number) => master.derive(`m/44'/${coin}'/${account}'`).publicExtendedKey;
  return { evmXpub: xpubOf(COIN_TYPE.evm), tronXpub: xpubOf(COIN_TYPE.tron) };
}

function assertValidMnemonic(words: string[]): void {
  if (![12, 15, 18, 21, 24].includes(words.length)) {
    throw new InvalidMnemonicError(
      `a mnemonic has 12, 15, 18, 21 or 24 words, not ${words.length}`,
    );
  }
  let bits = '';
  for (const [position, word] of words.entries()) {
    const index = english.indexOf(word);
    if (index < 0) {
      throw new InvalidMnemonicError(`word ${position + 1} is not in the BIP-39 English list`);
    }
    bits += index.toString(2).padStart(11, '0');
  }
  const entropyBits = (bits.length * 32) / 33;
  const entropy = Buffer.alloc(entropyBits / 8);
  for (let i = 0; i < entropy.length; i += 1) {
    entropy[i] = parseInt(bits.slice(i * 8, i * 8 + 8), 2);
  }
  const hash = createHash('sha256').update(entropy).digest();
  const expected = [...hash]
    .map((byte) => byte.toString(2).padStart(8, '0'))
    .join('')
    .slice(0, bits.length - entropyBits);
  if (bits.slice(entropyBits) !== expected) {
    throw new InvalidMnemonicError('the mnemonic checksum does not match: check the words');
  }
}
