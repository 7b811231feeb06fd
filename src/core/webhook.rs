//! Webhooks, the pure part: which events a key change makes, the endpoint's settings, the retry
//! schedule and the Standard Webhooks signature (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! with the bytes of the `whsec_` secret).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 8] =
    ["key.created", "key.updated", "key.expired", "key.revoked", "key.deleted", "key.leaked", "credits.low", "credits.exhausted"];
pub const SECRET_PREFIX: &str = "whsec_";
pub const MAX_URL_CHARS: usize = 2048;
/// How long an event is retried before it is given up (Standard Webhooks: about a day).
pub const DEFAULT_RETRY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The waits before each retry (Standard Webhooks' suggested schedule); the last one repeats
/// until the retry window closes.
pub const DEFAULT_RETRY_SCHEDULE_MS: [i64; 7] = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];

/// The events a change to a key makes, in the order they are delivered. `old`/`new` are the
/// record's management views (never a plaintext key); `None` is "did not exist" / "deleted".
pub fn key_events(old: Option<&Value>, new: Option<&Value>) -> Vec<&'static str> {
    let field = |v: Option<&Value>, name: &str| v.and_then(|v| v.get(name)).filter(|x| !x.is_null()).cloned();
    match (old, new) {
        (None, None) => Vec::new(),
        (None, Some(_)) => vec!["key.created"],
        (Some(_), None) => vec!["key.deleted"],
        (Some(_), Some(_)) => {
            let mut events = Vec::new();
            if field(old, "leaked_at").is_none() && field(new, "leaked_at").is_some() {
                events.push("key.leaked");
            }
            let status = |v: Option<&Value>| field(v, "status").and_then(|s| s.as_str().map(str::to_string)).unwrap_or_default();
            let (before, after) = (status(old), status(new));
            if before != "revoked" && after == "revoked" {
                events.push("key.revoked");
            } else if before == "active" && after == "expired" {
                events.push("key.expired");
            } else if events.is_empty() || before != after {
                events.push("key.updated");
            }
            events
        }
    }
}

/// Checks an endpoint's `url` and `events` (from `{"webhook": {...}}`); `partial` for an update.
pub fn check_settings(settings: &Map<String, Value>, partial: bool) -> Result<(Option<String>, Option<Vec<String>>), String> {
    if let Some(other) = settings.keys().find(|k| !matches!(k.as_str(), "url" | "events")) {
        return Err(format!("{other}: is not a webhook attribute (expected \"url\" and \"events\")"));
    }
    let url = match settings.get("url") {
        None if partial => None,
        Some(Value::String(u)) if is_http_url(u) => Some(u.clone()),
        _ => return Err(format!("url: must be an http:// or https:// URL of at most {MAX_URL_CHARS} printable ASCII characters")),
    };
    let events = match settings.get("events") {
        None if partial => None,
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let name = item.as_str().unwrap_or_default();
                if !EVENTS.contains(&name) {
                    return Err(format!("events[{i}]: must be one of {}", EVENTS.join(", ")));
                }
                if out.iter().any(|e| e == name) {
                    return Err(format!("events[{i}]: {name} is listed twice"));
                }
                out.push(name.to_string());
            }
            Some(out)
        }
        _ => return Err(format!("events: must be a non-empty array of event names ({})", EVENTS.join(", "))),
    };
    Ok((url, events))
}

/// `http://` or `https://`, then a host, in printable ASCII (anything else percent-encoded), as
/// the OpenAPI document's pattern says.
fn is_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    url.len() <= MAX_URL_CHARS
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.bytes().all(|b| b.is_ascii_graphic())
}

/// Why an endpoint's URL cannot be reached from the edge, without trying: its host is one label
/// (`http://receiver/`), a name only a private network resolves. `localhost` and IP literals
/// (`[::1]`, `127.0.0.1`) pass. The local runtime cannot fail such a lookup gracefully (it resets
/// the object that asked), so the attempt is recorded as failed instead.
pub fn unreachable_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return None;
    }
    let host = host.split(':').next().unwrap_or_default();
    let single_label = !host.trim_end_matches('.').contains('.');
    (single_label && !host.eq_ignore_ascii_case("localhost"))
        .then(|| format!("the host {host:?} is a single name, which no public DNS resolves; use a full host name"))
}

/// A new secret from 24 random bytes: `whsec_` and their base64.
pub fn new_secret(random: &[u8; 24]) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(random))
}

/// The `webhook-signature` header: `v1,` and the base64 HMAC-SHA256, keyed with the secret's bytes
/// (the base64 after `whsec_`), of `"{id}.{timestamp}.{body}"`.
pub fn sign(secret: &str, id: &str, timestamp_s: i64, body: &str) -> Option<String> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The retry schedule from `WEBHOOK_RETRY_SCHEDULE_MS` (comma-separated milliseconds), or the default.
pub fn parse_schedule(value: Option<&str>) -> Vec<i64> {
    let parsed: Option<Vec<i64>> =
        value.and_then(|v| v.split(',').map(|p| p.trim().parse::<i64>().ok().filter(|n| *n >= 0)).collect::<Option<Vec<i64>>>());
    match parsed {
        Some(list) if !list.is_empty() => list,
        _ => DEFAULT_RETRY_SCHEDULE_MS.to_vec(),
    }
}

/// When to try again after `attempts` failed attempts (1 after the first), or `None` when the
/// event, made at `created_at`, is past its retry window.
pub fn next_attempt(schedule: &[i64], attempts: i64, created_at: i64, now: i64, window_ms: i64) -> Option<i64> {
    let index = usize::try_from(attempts.saturating_sub(1).max(0)).unwrap_or(usize::MAX);
    let wait = schedule.get(index).or(schedule.last()).copied().unwrap_or(60_000);
    let at = now.saturating_add(wait);
    (at <= created_at.saturating_add(window_ms)).then_some(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn standard_webhooks_known_answer() {
        // The Standard Webhooks specification's example.
        let sig = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(sig.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert_eq!(sign("whsec_!!", "m", 1, "b"), None);
    }

    #[test]
    fn events_of_changes() {
        let active = json!({"status": "active", "leaked_at": null});
        let expired = json!({"status": "expired", "leaked_at": null});
        let revoked = json!({"status": "revoked", "leaked_at": null});
        let leaked = json!({"status": "revoked", "leaked_at": "2026-01-01T00:00:00Z"});
        assert_eq!(key_events(None, Some(&active)), ["key.created"]);
        assert_eq!(key_events(Some(&active), None), ["key.deleted"]);
        assert_eq!(key_events(Some(&active), Some(&active)), ["key.updated"]);
        assert_eq!(key_events(Some(&active), Some(&expired)), ["key.expired"]);
        assert_eq!(key_events(Some(&expired), Some(&active)), ["key.updated"]);
        assert_eq!(key_events(Some(&active), Some(&revoked)), ["key.revoked"]);
        assert_eq!(key_events(Some(&active), Some(&leaked)), ["key.leaked", "key.revoked"]);
        assert_eq!(key_events(Some(&revoked), Some(&leaked)), ["key.leaked"]);
    }

    #[test]
    fn settings() {
        for (url, reachable) in [
            ("https://hooks.example/k", true),
            ("http://localhost:8788/hooks", true),
            ("http://127.0.0.1:9/x", true),
            ("http://[::1]:9/x", true),
            ("https://user@hooks.example.com:8443/k?x=1", true),
            ("http://r", false),
            ("http://receiver:8080/hooks", false),
            ("https://user@n/x", false),
            ("http://r./x", false),
        ] {
            assert_eq!(unreachable_host(url).is_none(), reachable, "{url}");
        }
        let ok = json!({"url": "https://hooks.example/k", "events": ["key.revoked", "key.leaked"]});
        let (url, events) = check_settings(ok.as_object().unwrap(), false).unwrap();
        assert_eq!(url.as_deref(), Some("https://hooks.example/k"));
        assert_eq!(events.unwrap().len(), 2);
        let bad = |v: Value, partial: bool| check_settings(v.as_object().unwrap(), partial).unwrap_err();
        assert!(bad(json!({"url": "ftp://x", "events": ["key.created"]}), false).starts_with("url"));
        assert!(bad(json!({"url": "https://x/a b", "events": ["key.created"]}), false).starts_with("url"));
        assert!(bad(json!({"url": "https://x/\u{e9}", "events": ["key.created"]}), false).starts_with("url"));
        assert!(bad(json!({"url": "https:///x", "events": ["key.created"]}), false).starts_with("url"));
        assert!(bad(json!({"url": "https://x"}), false).starts_with("events"));
        assert!(bad(json!({"url": "https://x", "events": ["key.nope"]}), false).starts_with("events[0]"));
        assert!(check_settings(json!({"url": "https://x", "events": ["credits.low", "credits.exhausted"]}).as_object().unwrap(), false).is_ok());
        assert!(bad(json!({"events": ["key.created", "key.created"]}), true).starts_with("events[1]"));
        assert!(bad(json!({"secret": "x"}), true).starts_with("secret"));
        assert!(check_settings(json!({}).as_object().unwrap(), true).is_ok());
    }

    #[test]
    fn schedule() {
        assert_eq!(parse_schedule(Some("100, 200")), vec![100, 200]);
        assert_eq!(parse_schedule(Some("x")), DEFAULT_RETRY_SCHEDULE_MS.to_vec());
        assert_eq!(parse_schedule(None), DEFAULT_RETRY_SCHEDULE_MS.to_vec());
        let s = [100, 200];
        assert_eq!(next_attempt(&s, 1, 0, 1000, 10_000), Some(1100));
        assert_eq!(next_attempt(&s, 2, 0, 1000, 10_000), Some(1200));
        assert_eq!(next_attempt(&s, 9, 0, 1000, 10_000), Some(1200));
        assert_eq!(next_attempt(&s, 9, 0, 9900, 10_000), None);
        assert!(new_secret(&[0; 24]).starts_with("whsec_"));
    }
}
