//! Record JSON as the management API receives it (create, update, the origin's push) and as the
//! playground and vectors hold it (the view).
//! Oracles: every record the validation accepts compiles for the gate; view → parse → view
//! round-trips (the record read back from its own view is the same record).
#![no_main]

use keyward::core::record::{CompiledKey, KeyRecord, WriteMode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NOW: i64 = 1_780_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Some(attributes) = value.as_object() {
        let mut base = KeyRecord::blank("key_01J0000000000000000000000".into(), "d".repeat(64), NOW);
        base.name = "base".into();
        for mode in [WriteMode::Create, WriteMode::Update, WriteMode::Push] {
            if let Ok(record) = base.with_attributes(attributes, mode) {
                CompiledKey::compile(record.clone()).expect("a validated record does not compile");
                // Stored and read back as the gate reads it from KV.
                let stored = serde_json::to_string(&record).expect("a record does not serialize");
                let read: KeyRecord = serde_json::from_str(&stored).expect("a stored record does not read back");
                assert_eq!(read, record);
            }
        }
    }
    if let Ok(record) = KeyRecord::from_view(&value) {
        CompiledKey::compile(record.clone()).expect("a record from a view does not compile");
        let view = record.view(NOW);
        let again = KeyRecord::from_view(&view).expect("a record's own view does not parse");
        assert_eq!(again.view(NOW), view, "view round trip");
    }
});
