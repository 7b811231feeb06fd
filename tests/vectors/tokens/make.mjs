// Writes verify.json beside this file: known-answer vectors for token verification, made with
// Node's own crypto (Ed25519, HMAC), not keyward's code. Ed25519 signatures are deterministic, so
// running this again writes the same file. Run by hand: node tests/vectors/tokens/make.mjs
// The vectors run through the core natively (tests/vectors.rs) and in Chromium (the wasm core,
// tests/browser/tokens.test.mjs).
import { createHmac, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const b64url = (data) => Buffer.from(data).toString('base64url');
/** An Ed25519 key pair from a 32-byte seed (PKCS#8 wrapping of the seed). */
function pair(seedByte) {
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.alloc(32, seedByte)]);
  const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  return { privateKey, jwk: createPublicKey(privateKey).export({ format: 'jwk' }) };
}
const ours = pair(7);
const theirs = pair(9);
const KID = 'kw-vectors';
const ISSUER = 'keyward';
const IAT = 1_800_000_000;
const NOW = IAT * 1000 + 10_000;

const claims = {
  iss: ISSUER, sub: 'key_01J0000000000000000000000', iat: IAT, iat_ms: IAT * 1000, nbf: IAT, exp: IAT + 3600,
  jti: 'tok_vectors', type: 'workspace', workspace: 'ws-1', profile: null, kwd: 'ab'.repeat(32),
};
const encode = (header, payload) => `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
const signed = (payload, { header = { alg: 'EdDSA', typ: 'JWT', kid: KID }, key = ours.privateKey } = {}) => {
  const input = encode(header, payload);
  return `${input}.${b64url(sign(null, Buffer.from(input), key))}`;
};
const good = signed(claims);
const [h, p, s] = good.split('.');
const hsInput = encode({ alg: 'HS256', typ: 'JWT', kid: KID }, claims);

const cases = [
  { name: 'valid', token: good, now_ms: NOW, code: 'VALID', sub: claims.sub },
  { name: 'valid, a millisecond before exp', token: good, now_ms: claims.exp * 1000 - 1, code: 'VALID', sub: claims.sub },
  { name: 'at exp', token: good, now_ms: claims.exp * 1000, code: 'TOKEN_EXPIRED' },
  { name: 'a second past exp', token: good, now_ms: claims.exp * 1000 + 1000, code: 'TOKEN_EXPIRED' },
  { name: 'nbf a minute ahead', token: signed({ ...claims, nbf: IAT + 70 }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'simple authentication (a customer as profile)', token: signed({ ...claims, type: 'profile', profile: 'ann@example.com', idt: 'email' }), now_ms: NOW, code: 'VALID', sub: claims.sub, profile: 'ann@example.com' },
  { name: 'alg none', token: `${encode({ alg: 'none', typ: 'JWT' }, claims)}.`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'alg None with the real signature', token: `${encode({ alg: 'None', kid: KID }, claims)}.${s}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'HS256 with the public key as secret', token: `${hsInput}.${createHmac('sha256', Buffer.from(ours.jwk.x, 'base64url')).update(hsInput).digest('base64url')}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'ES256 header', token: `${encode({ alg: 'ES256', kid: KID }, claims)}.${s}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'a changed claim', token: `${h}.${b64url(JSON.stringify({ ...claims, sub: 'key_01J0000000000000000000001' }))}.${s}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'another deployment\'s key under this kid', token: signed(claims, { key: theirs.privateKey }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'an expired forgery', token: signed(claims, { key: theirs.privateKey }), now_ms: claims.exp * 1000 + 1000, code: 'TOKEN_INVALID' },
  { name: 'a kid pointing nowhere', token: signed(claims, { header: { alg: 'EdDSA', kid: 'kw-nowhere' } }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'no kid', token: signed(claims, { header: { alg: 'EdDSA' } }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'another issuer', token: signed({ ...claims, iss: 'elsewhere' }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'a truncated signature', token: `${h}.${p}.${s.slice(0, -4)}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'a padded signature', token: `${good}==`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'a huge header', token: signed(claims, { header: { alg: 'EdDSA', kid: KID, pad: 'x'.repeat(5000) } }), now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'two parts', token: `${h}.${p}`, now_ms: NOW, code: 'TOKEN_INVALID' },
  { name: 'claims that are not keyward\'s', token: signed({ iss: ISSUER, sub: claims.sub, exp: claims.exp }), now_ms: NOW, code: 'TOKEN_INVALID' },
];

const file = {
  description: 'Token verification (contract section 15), made by tests/vectors/tokens/make.mjs with Node\'s crypto: each token checked at now_ms against jwks and issuer gives code (and, when VALID, sub and profile).',
  issuer: ISSUER,
  jwks: { keys: [{ ...ours.jwk, kid: KID, alg: 'EdDSA', use: 'sig' }] },
  cases,
};
writeFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), 'verify.json'), `${JSON.stringify(file, null, 1)}\n`);
console.log(`${cases.length} token vectors`);
