//! The body event scanner: one top-level field of a JSON body read without building the document.
//! Input: the field name on the first line, the body after it.
//! Oracle: the scanner agrees with serde_json on every input: where serde_json reads the body, the
//! scanner reads it too and finds the same value (the last one, if the field repeats); where
//! serde_json refuses it, so does the scanner.
#![no_main]

use keyward::core::decision::{body_field, parse_body};
use keyward_fuzz::head_and_rest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (field, body) = head_and_rest(data);
    let Ok(field) = std::str::from_utf8(field) else { return };
    let scanned = body_field(Some(body), field);
    let parsed = parse_body(Some(body)).map(|document| document.get(field).cloned());
    assert_eq!(scanned, parsed, "field {field:?} of {:?}", String::from_utf8_lossy(body));
});
