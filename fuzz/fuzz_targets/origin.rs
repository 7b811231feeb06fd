//! Web origins, origin lists with `*.` wildcards, and the origin of a `Referer`.
//! Input: lines; the last is a request's origin, the others a list.
//! Oracles: parse → print → parse gives the same origin; a list allows exactly what one of its
//! entries allows alone; a wildcard entry allows exactly the origins of the same scheme and port
//! whose host ends in `.` and its domain (checked on the printed forms, not by the same code);
//! the origin read from a `Referer` prints and parses back to itself.
#![no_main]

use keyward::core::origin::{parse_origin, referer_origin, request_origin, OriginList, RequestOrigin};
use libfuzzer_sys::fuzz_target;

/// What a wildcard entry allows, by string: `scheme://*.domain[:port]` against a printed origin.
fn wildcard_allows(entry: &str, origin: &str) -> Option<bool> {
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let domain = rest.strip_prefix("*.")?;
    let base = parse_origin(&format!("{scheme}://{domain}")).ok()?.to_string();
    let (base_scheme, base_authority) = base.split_once("://")?;
    let (scheme, authority) = origin.split_once("://")?;
    Some(scheme == base_scheme && !authority.starts_with('[') && authority.ends_with(&format!(".{base_authority}")))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines {
        if let Ok(origin) = parse_origin(line) {
            let printed = origin.to_string();
            assert_eq!(parse_origin(&printed).as_ref(), Ok(&origin), "{line:?} printed as {printed:?}");
            assert_eq!(printed, printed.to_ascii_lowercase());
        }
        // `Origin` is read trimmed; an origin that does not parse is opaque, never replaced by Referer.
        match request_origin(Some(line), Some("https://referer.example")) {
            RequestOrigin::Known(known) => assert_eq!(parse_origin(line.trim()), Ok(known), "{line:?}"),
            RequestOrigin::Opaque(_) => assert!(parse_origin(line.trim()).is_err(), "{line:?}"),
            RequestOrigin::Missing => panic!("an Origin header read as missing: {line:?}"),
        }
        if let Some(origin) = referer_origin(line) {
            let printed = origin.to_string();
            assert_eq!(parse_origin(&printed), Ok(origin), "referer {line:?}");
        }
    }
    let Some((last, entries)) = lines.split_last() else { return };
    let Ok(origin) = parse_origin(last) else { return };
    let printed = origin.to_string();
    let valid: Vec<&str> = entries.iter().copied().filter(|e| OriginList::compile(&[e]).is_ok()).collect();
    let list = OriginList::compile(&valid).expect("valid entries refused together");
    let one_by_one = valid.iter().any(|e| OriginList::compile(&[e]).is_ok_and(|l| l.allows(&origin)));
    assert_eq!(list.allows(&origin), one_by_one, "{printed} against {valid:?}");
    for entry in &valid {
        let alone = OriginList::compile(&[entry]).expect("valid entry refused").allows(&origin);
        match wildcard_allows(entry, &printed) {
            Some(expected) => assert_eq!(alone, expected, "{printed} against wildcard {entry:?}"),
            None => {
                let exact = parse_origin(entry).is_ok_and(|e| e == origin);
                assert_eq!(alone, exact, "{printed} against {entry:?}");
            }
        }
    }
    if entries.iter().any(|e| OriginList::compile(&[e]).is_err()) {
        assert!(OriginList::compile(entries).is_err());
    }
});
