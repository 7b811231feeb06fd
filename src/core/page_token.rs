//! The management list's `page_token`: an opaque, URL-safe name for the last id of a page.
//!
//! A token names the last id of the previous page, so pages never overlap or skip even while keys
//! are added or deleted between calls. It arrives from the client, so decoding is strict: the
//! exact encoding [`encode`] produces and a well-formed key id, or nothing.

use base64::Engine;

use super::key::{is_key_id, ID_LEN};

const PREFIX: &str = "after:";
/// Longer tokens cannot be ones [`encode`] made; refused before decoding.
const MAX_TOKEN_LEN: usize = (PREFIX.len() + ID_LEN).div_ceil(3) * 4;

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The token for the page after the one ending at `last_id`.
pub fn encode(last_id: &str) -> String {
    ENGINE.encode(format!("{PREFIX}{last_id}"))
}

/// The key id a token names; `None` for anything [`encode`] did not produce from a key id.
pub fn decode(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let bytes = ENGINE.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix(PREFIX)?;
    is_key_id(id).then(|| id.to_string())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::core::key::new_key_id;

    #[test]
    fn round_trips_a_key_id() {
        let id = new_key_id(1_700_000_000_000, &[7; 10]);
        let token = encode(&id);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(decode(&token).unwrap(), id);
    }

    #[test]
    fn refuses_what_it_did_not_make() {
        let id = new_key_id(1_700_000_000_000, &[7; 10]);
        for bad in [
            String::new(),
            "%%%".into(),
            format!("{}=", encode(&id)),
            ENGINE.encode(format!("before:{id}")),
            ENGINE.encode("after:key_123"),
            ENGINE.encode(format!("after:{}", id.to_lowercase())),
            base64::engine::general_purpose::STANDARD.encode(format!("after:{id}?")),
            "A".repeat(MAX_TOKEN_LEN + 4),
        ] {
            assert_eq!(decode(&bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics_and_only_yields_ids(token in ".{0,80}") {
            if let Some(id) = decode(&token) {
                proptest::prop_assert!(is_key_id(&id));
                proptest::prop_assert_eq!(decode(&encode(&id)), Some(id));
            }
        }
    }
}
