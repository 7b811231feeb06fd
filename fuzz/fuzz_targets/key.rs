//! API keys: `prefix_random+checksum`. Oracles: whatever parses has a valid prefix, 32 random and
//! 6 checksum characters that are the checksum of the rest; a key generated from the input's
//! bytes always parses back to its own parts; a one-character change is never accepted.
#![no_main]

use keyward::core::digest::{is_digest, key_digest};
use keyward::core::key::{checksum_of, generate_key, key_preview, parse_key, validate_prefix, CHECKSUM_LEN, RANDOM_LEN};
use keyward_fuzz::head_and_rest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = key_preview(text);
        assert!(is_digest(&key_digest(text)));
        let _ = is_digest(text);
        if let Ok(parsed) = parse_key(text) {
            assert!(validate_prefix(parsed.prefix).is_ok());
            assert_eq!(parsed.random.len(), RANDOM_LEN);
            assert_eq!(parsed.checksum.len(), CHECKSUM_LEN);
            assert_eq!(format!("{}_{}{}", parsed.prefix, parsed.random, parsed.checksum), text);
            assert_eq!(checksum_of(&format!("{}_{}", parsed.prefix, parsed.random)), parsed.checksum);
        }
    }
    let (prefix, random) = head_and_rest(data);
    let Ok(prefix) = std::str::from_utf8(prefix) else { return };
    if let Ok(key) = generate_key(prefix, random) {
        let parsed = parse_key(&key).expect("a generated key does not parse");
        assert_eq!(parsed.prefix, prefix);
        // CRC-32 catches every single-character change.
        let bytes = key.as_bytes();
        let at = random.len() % bytes.len();
        let mut changed = bytes.to_vec();
        if let Some(b) = changed.get_mut(at) {
            *b = if *b == b'x' { b'y' } else { b'x' };
        }
        if let Ok(changed) = String::from_utf8(changed) {
            if changed != key {
                assert!(parse_key(&changed).is_err(), "{changed} accepted after a change to {key}");
            }
        }
    }
});
