//! The credential headers: `Authorization` (any scheme), `X-API-Key` and the query string.
//! Input: a presence byte, then the three values one per line.
//! Oracles: a key found is never longer than the bound; it is the one key every source named;
//! the query the gate forwards holds no `api_key` any more, and keeps every other parameter.
#![no_main]

use keyward::core::credential::{find_credential, query_values, strip_api_key, CredentialSource};
use keyward_fuzz::fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some([authorization, x_api_key, query]) = fields::<3>(data) else { return };
    let found = find_credential(authorization, x_api_key, query);
    if let Some(query) = query {
        let stripped = strip_api_key(query);
        assert_eq!(query_values(&stripped, "api_key").count(), 0, "api_key left in {stripped:?}");
        let kept = |q: &str| q.split('&').filter(|p| !p.is_empty()).count();
        assert!(kept(&stripped) <= kept(query));
        if let Ok(Some(c)) = &found {
            if c.has(CredentialSource::Query) {
                assert!(query_values(query, "api_key").all(|v| v.as_deref() == Some(c.key.as_str())));
            }
        }
    }
    if let Ok(Some(c)) = &found {
        assert!(!c.sources.is_empty());
        assert!(c.key.len() <= 1024 || c.has(CredentialSource::Basic), "unbounded key from {:?}", c.sources);
        if c.has(CredentialSource::Header) {
            assert_eq!(x_api_key.map(str::trim), Some(c.key.as_str()));
        }
        if c.workspace.is_some() {
            assert!(c.has(CredentialSource::Basic));
        }
    }
});
