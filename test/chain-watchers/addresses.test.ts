import { describe, expect, test } from 'vitest';
import { HDKey, mnemonicToAccount } from 'viem/accounts';
import { TronWeb } from 'tronweb';
import { deriveEvmAddress } from '../../chain-watchers/addresses/deriveEvmAddress.js';
import { deriveTronAddress } from '../../chain-watchers/addresses/deriveTronAddress.js';
import { mnemonicToAccountXpubs } from '../../chain-watchers/addresses/mnemonicToAccountXpubs.js';
import { base58CheckDecode, base58CheckEncode } from '../../chain-watchers/addresses/base58.js';
import {
  InvalidAddressIndexError,
  InvalidExtendedKeyError,
  InvalidMnemonicError,
  PrivateExtendedKeyRefusedError,
} from '../../chain-watchers/addresses/errors.js';

// The well-known development mnemonic (Hardhat/Anvil): never holds real funds.
const MNEMONIC = 'test test test test test test test test test test test junk';
const INDEXES = [0, 1, 2, 7, 19, 1000, 2 ** 31 - 1];
const { evmXpub, tronXpub } = mnemonicToAccountXpubs(MNEMONIC);

describe('deposit addresses from the account xpubs', () => {
  test.each(INDEXES)('EVM index %i matches viem mnemonicToAccount', (index) => {
    const derived = deriveEvmAddress(evmXpub, index);
    expect(derived.address).toBe(mnemonicToAccount(MNEMONIC, { addressIndex: index }).address);
    expect(derived.derivationPath).toBe(`m/44'/60'/0'/0/${index}`);
  });

  test.each(INDEXES)('Tron index %i matches TronWeb.fromMnemonic', (index) => {
    const path = `m/44'/195'/0'/0/${index}`;
    const derived = deriveTronAddress(tronXpub, index);
    const reference = TronWeb.fromMnemonic(MNEMONIC, path);
    expect(derived.address).toBe(reference.address);
    expect(derived.derivationPath).toBe(path);
    // And the same address from TronWeb's private-key path, to pin the 0x41 prefix + base58check.
    expect(TronWeb.address.fromPrivateKey(reference.privateKey.replace(/^0x/, ''))).toBe(
      derived.address,
    );
    expect(derived.address).toMatch(/^T[1-9A-HJ-NP-Za-km-z]{33}$/);
  });

  test('the first addresses of the test mnemonic are the well-known ones', () => {
    expect(deriveEvmAddress(evmXpub, 0).address).toBe('0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266');
    expect(deriveTronAddress(tronXpub, 0).address).toBe('TWer2Ygk5TEheHp3TPuYeqxmB6SsGZmaL6');
  });

  test('another account and a passphrase give other keys, still matching the references', () => {
    const other = mnemonicToAccountXpubs(MNEMONIC, { account: 1 });
    const derived = deriveEvmAddress(other.evmXpub, 3);
    expect(derived.derivationPath).toBe("m/44'/60'/1'/0/3");
    expect(derived.address).toBe(
      mnemonicToAccount(MNEMONIC, { accountIndex: 1, addressIndex: 3 }).address,
    );
    expect(deriveTronAddress(other.tronXpub, 3).address).toBe(
      TronWeb.fromMnemonic(MNEMONIC, "m/44'/195'/1'/0/3").address,
    );
    const salted = mnemonicToAccountXpubs(MNEMONIC, { passphrase: 'salt' });
    expect(deriveEvmAddress(salted.evmXpub, 0).address).toBe(
      mnemonicToAccount(MNEMONIC, { passphrase: 'salt' }).address,
    );
  });

  test('distinct indexes give distinct addresses', () => {
    const addresses = new Set(
      Array.from({ length: 50 }, (_, i) => deriveTronAddress(tronXpub, i).address),
    );
    expect(addresses.size).toBe(50);
  });
});

describe('refusing what is not an account xpub', () => {
  const master = HDKey.fromMasterSeed(
    // Any seed will do: these keys only need the right shape.
    new Uint8Array(64).fill(7),
  );

  test('an extended private key is refused loudly and never echoed', () => {
    const xprv = master.derive("m/44'/195'/0'").privateExtendedKey;
    const attempt = () => deriveTronAddress(xprv, 0);
    expect(attempt).toThrow(PrivateExtendedKeyRefusedError);
    try {
      attempt();
    } catch (error) {
      expect((error as Error).message).toMatch(/PRIVATE key/);
      expect((error as Error).message).not.toContain(xprv.slice(4, 20));
      expect((error as PrivateExtendedKeyRefusedError).code).toBe('private_extended_key_refused');
    }
  });

  test.each([
    ['an empty string', ''],
    ['garbage', 'not-an-xpub'],
    ['a broken checksum', evmXpub.slice(0, -1) + (evmXpub.endsWith('A') ? 'B' : 'A')],
    ['an EVM address', '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266'],
  ])('%s is an InvalidExtendedKeyError', (_label, value) => {
    expect(() => deriveEvmAddress(value, 0)).toThrow(InvalidExtendedKeyError);
  });

  test('a key at the wrong depth is refused (master, and the receive chain itself)', () => {
    expect(() => deriveEvmAddress(master.publicExtendedKey, 0)).toThrow(/depth 0/);
    const receiveChain = master.derive("m/44'/60'/0'/0").publicExtendedKey;
    expect(() => deriveEvmAddress(receiveChain, 0)).toThrow(/depth 4/);
  });

  test('a non-xpub version (zpub) is refused', () => {
    const payload = base58CheckDecode(evmXpub)!;
    const zpub = Uint8Array.from(payload);
    zpub.set([0x04, 0xb2, 0x47, 0x46], 0);
    expect(() => deriveEvmAddress(base58CheckEncode(zpub), 0)).toThrow(/version 0x04b24746/);
  });

  test.each([-1, 1.5, 2 ** 31, Number.NaN])('index %s is refused', (index) => {
    expect(() => deriveTronAddress(tronXpub, index)).toThrow(InvalidAddressIndexError);
  });

  test('an invalid mnemonic is refused: wrong checksum, unknown word, wrong length', () => {
    expect(() => mnemonicToAccountXpubs(Array(12).fill('test').join(' '))).toThrow(/checksum/);
    expect(() => mnemonicToAccountXpubs(MNEMONIC.replace('junk', 'junky'))).toThrow(
      InvalidMnemonicError,
    );
    expect(() => mnemonicToAccountXpubs('test test test')).toThrow(/12, 15, 18, 21 or 24/);
  });
});
