//! HTTP Basic credentials. The input is used twice: as the base64 text after `Basic ` (any bytes
//! must give an answer, never a crash), and as the decoded `workspace:key` text, encoded here and
//! read back (round trip: the same workspace and key come out, or a refusal for the too long).
#![no_main]

use base64::Engine;
use keyward::core::credential::find_credential;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = find_credential(Some(&format!("Basic {text}")), None, None);
        let _ = find_credential(Some(&format!("basic  {text} ")), Some(text), None);
        if let Some((workspace, key)) = text.split_once(':') {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            let read = find_credential(Some(&format!("Basic {encoded}")), None, None);
            if encoded.len() <= 2048 {
                let c = read.expect("well-formed Basic credentials refused").expect("no credential found");
                assert_eq!(c.key, key);
                assert_eq!(c.workspace.as_deref(), Some(workspace));
            } else {
                assert!(read.is_err(), "over-long Basic credentials accepted");
            }
        }
    }
});
