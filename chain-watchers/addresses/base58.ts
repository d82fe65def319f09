import { sha256 } from 'viem';

const ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
const ALPHABET_INDEX = new Map([...ALPHABET].map((char, index) => [char, BigInt(index)]));

/** Base58 (Bitcoin alphabet): leading zero bytes become leading '1's. */
export function base58Encode(bytes: Uint8Array): string {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  let text = '';
  while (value > 0n) {
    text = ALPHABET[Number(value % 58n)]! + text;
    value /= 58n;
  }
  for (const byte of bytes) {
    if (byte !== 0) break;
    text = '1' + text;
  }
  return text;
}

/** Inverse of `base58Encode`; null when the text holds a character outside the alphabet. */
export function base58Decode(text: string): Uint8Array | null {
  let value = 0n;
  for (const char of text) {
    const digit = ALPHABET_INDEX.get(char);
    if (digit === undefined) return null;
    value = value * 58n + digit;
  }
  const body: number[] = [];
  while (value > 0n) {
    body.unshift(Number(value & 0xffn));
    value >>= 8n;
  }
  let leadingZeros = 0;
  while (text[leadingZeros] === '1') leadingZeros += 1;
  return Uint8Array.from([...new Array<number>(leadingZeros).fill(0), ...body]);
}

function checksum(payload: Uint8Array): Uint8Array {
  return sha256(sha256(payload, 'bytes'), 'bytes').subarray(0, 4);
}

/** Base58Check: the payload followed by the first 4 bytes of its double SHA-256. */
export function base58CheckEncode(payload: Uint8Array): string {
  const sum = checksum(payload);
  const bytes = new Uint8Array(payload.length + 4);
  bytes.set(payload);
  bytes.set(sum, payload.length);
  return base58Encode(bytes);
}

/** The payload of a Base58Check string, or null when it does not decode or its checksum fails. */
export function base58CheckDecode(text: string): Uint8Array | null {
  const bytes = base58Decode(text);
  if (bytes === null || bytes.length < 5) return null;
  const payload = bytes.subarray(0, bytes.length - 4);
  const expected = checksum(payload);
  for (let i = 0; i < 4; i += 1) if (bytes[payload.length + i] !== expected[i]) return null;
  return payload;
}
