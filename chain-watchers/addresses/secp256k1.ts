/**
 * The one curve operation address derivation needs that the libraries we depend on do not
 * expose on a public key alone: turning a compressed secp256k1 point (33 bytes, what BIP-32
 * extended public keys carry) into its uncompressed form (65 bytes, what Ethereum and Tron
 * hash into an address).
 */

const P = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2fn;

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

function bytesToBigInt(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function bigIntTo32Bytes(value: bigint): Uint8Array {
  const bytes = new Uint8Array(32);
  let rest = value;
  for (let i = 31; i >= 0; i -= 1) {
    bytes[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return bytes;
}

/**
 * Decompresses a 33-byte SEC1 public key into the 65-byte `04 || x || y` form.
 * Throws when the bytes are not a point on the curve.
 */
export function decompressPublicKey(compressed: Uint8Array): Uint8Array {
  const prefix = compressed[0];
  if (compressed.length !== 33 || (prefix !== 0x02 && prefix !== 0x03)) {
    throw new Error('not a compressed secp256k1 public key');
  }
  const x = bytesToBigInt(compressed.subarray(1));
  if (x >= P) throw new Error('public key x coordinate is out of range');
  const ySquared = (modPow(x, 3n, P) + 7n) % P;
  // P = 3 (mod 4), so a square root is ySquared^((P+1)/4).
  let y = modPow(ySquared, (P + 1n) / 4n, P);
  if ((y * y) % P !== ySquared) throw new Error('public key is not on the secp256k1 curve');
  const wantOdd = prefix === 0x03;
  if ((y & 1n) === 1n) {
    if (!wantOdd) y = P - y;
  } else if (wantOdd) {
    y = P - y;
  }
  const uncompressed = new Uint8Array(65);
  uncompressed[0] = 0x04;
  uncompressed.set(bigIntTo32Bytes(x), 1);
  uncompressed.set(bigIntTo32Bytes(y), 33);
  return uncompressed;
}
