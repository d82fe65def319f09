/**
 * Errors of deposit-address derivation. Each has a stable `code`; the message says what to
 * fix and never repeats the key it was given (an extended key is a secret-adjacent value and
 * a private one is a secret).
 */
export abstract class AddressDerivationError extends Error {
  abstract readonly code: string;
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The configured value is not a usable account-level extended public key. */
export class InvalidExtendedKeyError extends AddressDerivationError {
  readonly code = 'invalid_extended_key';
}

/**
 * The configured value is an extended *private* key. The service must hold no private key,
 * so this is refused outright rather than silently neutered.
 */
export class PrivateExtendedKeyRefusedError extends AddressDerivationError {
  readonly code = 'private_extended_key_refused';
}

/** The address index is not an integer in [0, 2^31). */
export class InvalidAddressIndexError extends AddressDerivationError {
  readonly code = 'invalid_address_index';
}

/** The phrase is not a valid BIP-39 English mnemonic (unknown word, wrong length or checksum). */
export class InvalidMnemonicError extends AddressDerivationError {
  readonly code = 'invalid_mnemonic';
}
