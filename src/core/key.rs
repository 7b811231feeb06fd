//! The key format: `<prefix>_<32 random base62 chars><6 base62 chars of CRC-32>`.
//!
//! The checksum lets the gate turn away typos and garbage without touching KV. Random bytes come
//! from the caller (the platform CSPRNG at the edge and in the browser), so this stays pure.

use std::fmt;

pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const RANDOM_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest key the parser looks at; anything longer is malformed before any work is done.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + RANDOM_LEN + CHECKSUM_LEN;
/// Random bytes [`generate_key`] wants: rejection sampling discards about 3 % of them.
pub const RANDOM_BYTES_FOR_KEY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormatError {
    Empty,
    TooLong,
    NoPrefix,
    BadPrefix,
    BadLength,
    BadCharacter,
    ChecksumMismatch,
}

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormatError::Empty => "the key is empty",
            KeyFormatError::TooLong => "the key is too long",
            KeyFormatError::NoPrefix => "the key has no prefix (expected <prefix>_<38 characters>)",
            KeyFormatError::BadPrefix => {
                "the key prefix must be 1 to 32 letters, digits or underscores"
            }
            KeyFormatError::BadLength => "the key body must be 38 characters",
            KeyFormatError::BadCharacter => "the key body may only hold letters and digits",
            KeyFormatError::ChecksumMismatch => "the key checksum does not match",
        })
    }
}

/// A key whose shape and checksum are right; says nothing about whether it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub prefix: &'a str,
    pub random: &'a str,
    pub checksum: &'a str,
}

/// Checks shape and checksum; never reads storage.
pub fn parse_key(key: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    if key.is_empty() {
        return Err(KeyFormatError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyFormatError::TooLong);
    }
    let (prefix, body) = key.rsplit_once('_').ok_or(KeyFormatError::NoPrefix)?;
    validate_prefix(prefix).map_err(|_| KeyFormatError::BadPrefix)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN {
        return Err(KeyFormatError::BadLength);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::BadCharacter);
    }
    let (random, checksum) = body.split_at(RANDOM_LEN);
    let signed = key.get(..key.len() - CHECKSUM_LEN).ok_or(KeyFormatError::BadLength)?;
    if checksum_of(signed) != checksum {
        return Err(KeyFormatError::ChecksumMismatch);
    }
    Ok(ParsedKey { prefix, random, checksum })
}

/// A prefix is 1 to 32 ASCII letters, digits and underscores, not starting or ending with `_`.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyFormatError> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !prefix.starts_with('_')
        && !prefix.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(KeyFormatError::BadPrefix)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyGenError {
    BadPrefix,
    /// Too few usable random bytes were supplied; call again with fresh bytes.
    NotEnoughRandomness,
}

impl fmt::Display for KeyGenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyGenError::BadPrefix => "the key prefix must be 1 to 32 letters, digits or underscores",
            KeyGenError::NotEnoughRandomness => "not enough random bytes to generate a key",
        })
    }
}

/// Builds a key from caller-supplied CSPRNG bytes (at least 32 usable ones; pass 64).
pub fn generate_key(prefix: &str, random: &[u8]) -> Result<String, KeyGenError> {
    validate_prefix(prefix).map_err(|_| KeyGenError::BadPrefix)?;
    let mut key = String::with_capacity(prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    let mut taken = 0;
    // 248 = 4 * 62: bytes at or above it are discarded so every character is equally likely.
    for &byte in random.iter().filter(|&&b| b < 248) {
        if taken == RANDOM_LEN {
            break;
        }
        key.push(base62_char(usize::from(byte % 62)));
        taken += 1;
    }
    if taken < RANDOM_LEN {
        return Err(KeyGenError::NotEnoughRandomness);
    }
    let checksum = checksum_of(&key);
    key.push_str(&checksum);
    Ok(key)
}

/// Six base62 digits of the CRC-32 (IEEE) of `signed`, most significant first.
pub fn checksum_of(signed: &str) -> String {
    let mut value = crc32fast::hash(signed.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62.get((value % 62) as usize).copied().unwrap_or(b'0');
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// What records show instead of the key: the prefix and the last four characters.
pub fn key_preview(key: &str) -> String {
    let prefix = key.rsplit_once('_').map(|(p, _)| p).unwrap_or("");
    let tail: String = {
        let chars: Vec<char> = key.chars().rev().take(4).collect();
        chars.into_iter().rev().collect()
    };
    format!("{prefix}_...{tail}")
}

fn base62_char(index: usize) -> char {
    char::from(BASE62.get(index).copied().unwrap_or(b'0'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_key() -> String {
        let bytes: Vec<u8> = (0u8..64).collect();
        generate_key("kw_test", &bytes).unwrap()
    }

    #[test]
    fn generated_key_has_the_documented_shape() {
        let key = sample_key();
        assert!(key.starts_with("kw_test_"));
        assert_eq!(key.len(), "kw_test_".len() + 38);
        let parsed = parse_key(&key).unwrap();
        assert_eq!(parsed.prefix, "kw_test");
        assert_eq!(parsed.random, "0123456789ABCDEFGHIJKLMNOPQRSTUV");
    }

    #[test]
    fn checksum_known_answer() {
        // CRC-32("kw_test_0123456789ABCDEFGHIJKLMNOPQRSTUV") = 0x81171817 (zlib.crc32)
        // in base62, six digits.
        let signed = "kw_test_0123456789ABCDEFGHIJKLMNOPQRSTUV";
        assert_eq!(crc32fast::hash(signed.as_bytes()), 0x8117_1817);
        let mut v: u64 = 0;
        for c in checksum_of(signed).bytes() {
            v = v * 62 + BASE62.iter().position(|&b| b == c).unwrap() as u64;
        }
        assert_eq!(v, 0x8117_1817);
    }

    #[test]
    fn rejects_each_malformation() {
        let key = sample_key();
        assert_eq!(parse_key(""), Err(KeyFormatError::Empty));
        assert_eq!(parse_key(&"a".repeat(200)), Err(KeyFormatError::TooLong));
        assert_eq!(parse_key("abcdef"), Err(KeyFormatError::NoPrefix));
        let body = &key["kw_test_".len()..];
        assert_eq!(parse_key(&format!("_{body}")), Err(KeyFormatError::BadPrefix));
        assert_eq!(parse_key(&format!("kw-test_{body}")), Err(KeyFormatError::BadPrefix));
        assert_eq!(parse_key(&key[..key.len() - 1]), Err(KeyFormatError::BadLength));
        let mut bad = key.clone();
        bad.replace_range(10..11, "-");
        assert_eq!(parse_key(&bad), Err(KeyFormatError::BadCharacter));
        let mut wrong = key.clone();
        let c = if &key[12..13] == "x" { "y" } else { "x" };
        wrong.replace_range(12..13, c);
        assert_eq!(parse_key(&wrong), Err(KeyFormatError::ChecksumMismatch));
    }

    #[test]
    fn generation_needs_enough_randomness() {
        assert_eq!(generate_key("kw_live", &[255u8; 64]), Err(KeyGenError::NotEnoughRandomness));
        assert_eq!(generate_key("kw_live", &[1u8; 31]), Err(KeyGenError::NotEnoughRandomness));
        assert_eq!(generate_key("", &[1u8; 64]), Err(KeyGenError::BadPrefix));
    }

    #[test]
    fn preview_shows_prefix_and_last_four() {
        let key = sample_key();
        let preview = key_preview(&key);
        assert!(preview.starts_with("kw_test_..."));
        assert!(preview.ends_with(&key[key.len() - 4..]));
        assert!(!preview.contains(&key[8..20]));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,120}") {
            let _ = parse_key(&s);
        }

        #[test]
        fn generated_keys_always_parse(bytes in proptest::collection::vec(any::<u8>(), 64)) {
            if let Ok(key) = generate_key("kw_live", &bytes) {
                prop_assert!(parse_key(&key).is_ok());
            }
        }

        #[test]
        fn checksum_catches_any_single_character_change(
            bytes in proptest::collection::vec(0u8..248, 32),
            position in 0usize..38,
            replacement in 0usize..62,
        ) {
            let key = generate_key("kw_live", &bytes).unwrap();
            let index = "kw_live_".len() + position;
            let original = key.as_bytes()[index];
            let new = BASE62[replacement];
            prop_assume!(new != original);
            let mut changed = key.into_bytes();
            changed[index] = new;
            let changed = String::from_utf8(changed).unwrap();
            prop_assert!(parse_key(&changed).is_err());
        }
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
pub const ID_PREFIX: &str = "key_";
pub const ID_LEN: usize = ID_PREFIX.len() + 26;

/// A record id, `key_` + a ULID: 48 bits of milliseconds then 80 random bits, Crockford base32,
/// so that sorting ids sorts records by creation time.
pub fn new_key_id(now_ms: i64, random: &[u8; 10]) -> String {
    let time = u128::try_from(now_ms.max(0)).unwrap_or(0) & ((1u128 << 48) - 1);
    let mut rand = 0u128;
    for &b in random {
        rand = (rand << 8) | u128::from(b);
    }
    let value = (time << 80) | rand;
    let mut out = String::with_capacity(ID_LEN);
    out.push_str(ID_PREFIX);
    for i in (0..26).rev() {
        let index = ((value >> (i * 5)) & 31) as usize;
        out.push(char::from(CROCKFORD.get(index).copied().unwrap_or(b'0')));
    }
    out
}

/// Whether `id` has the shape [`new_key_id`] produces.
pub fn is_key_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id.starts_with(ID_PREFIX)
        && id.bytes().skip(ID_PREFIX.len()).all(|b| CROCKFORD.contains(&b))
        // The first character carries only 3 bits of the 128 (26 * 5 = 130).
        && id.as_bytes().get(ID_PREFIX.len()).is_some_and(|b| *b <= b'7')
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = new_key_id(1_000, &[255; 10]);
        let b = new_key_id(1_001, &[0; 10]);
        assert!(a < b);
        assert!(is_key_id(&a) && is_key_id(&b));
        assert!(!is_key_id("key_123"));
        assert!(!is_key_id(&a.to_lowercase()));
    }
}
