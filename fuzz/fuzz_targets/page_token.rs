//! The management list's `page_token` (a query parameter, so anyone's input).
//! Oracles: a token decodes only to a well-formed key id, and only from the one canonical
//! encoding (decode → encode gives the token back); encode → decode round-trips every id.
#![no_main]

use keyward::core::key::{is_key_id, new_key_id};
use keyward::core::page_token::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        if let Some(id) = decode(token) {
            assert!(is_key_id(&id), "{token:?} decoded to {id:?}");
            assert_eq!(encode(&id), token, "a second spelling of the token for {id}");
        }
    }
    let mut random = [0u8; 10];
    for (slot, b) in random.iter_mut().zip(data.iter().skip(8)) {
        *slot = *b;
    }
    let mut time = [0u8; 8];
    for (slot, b) in time.iter_mut().zip(data.iter()) {
        *slot = *b;
    }
    let id = new_key_id(i64::from_le_bytes(time), &random);
    assert_eq!(decode(&encode(&id)), Some(id));
});
