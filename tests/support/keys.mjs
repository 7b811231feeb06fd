// Keys made the way an origin that mints its own keys would make them (contract section 2), so
// tests can push records by digest without ever sending keyward the plaintext.
import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

export function checksum(signed) {
  let value = zlib.crc32(Buffer.from(signed, 'utf8'));
  let out = '';
  for (let i = 0; i < 6; i++) { out = BASE62[value % 62] + out; value = Math.floor(value / 62); }
  return out;
}

export function makeKey(prefix = 'kw_test') {
  let random = '';
  while (random.length < 32) {
    for (const b of randomBytes(64)) if (b < 248 && random.length < 32) random += BASE62[b % 62];
  }
  const signed = `${prefix}_${random}`;
  return signed + checksum(signed);
}

export const digest = (key) => createHash('sha256').update(key).digest('hex');

/** The same key with one character of its random part changed: the checksum no longer matches. */
export function typo(key) {
  const i = key.length - 10;
  const c = key[i] === 'a' ? 'b' : 'a';
  return key.slice(0, i) + c + key.slice(i + 1);
}
