//! The management API over HTTP: one agent, the bearer token, and the contract's envelope turned
//! into `Ok(answer)` or a [`Failure`] that says in one line what went wrong.

use std::time::Duration;

use serde_json::Value;

use crate::failure::Failure;

/// The management API of one keyward deployment.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// Sent as `Authorization: Bearer`; never printed, never part of an error.
    token: String,
    /// `/workspaces/{w}` when the calls are a workspace's (`--workspace`), else empty.
    scope: String,
}

/// A management call that keyward answered with `success: false`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// How a call ended when it did not succeed.
#[derive(Debug)]
pub enum CallError {
    /// keyward answered, and said no.
    Refused(Refused),
    /// No answer in the contract's shape: the URL is wrong, down, or not keyward.
    Transport(String),
}

impl CallError {
    /// Whether the same call might succeed if tried again a moment later.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Refused(r) => r.status >= 500 || r.status == 429,
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Transport(message) => Failure::new(message),
            CallError::Refused(r) if r.status == 401 => Failure::new(format!(
                "the token was refused ({} {}: {}); check --token or KEYWARD_TOKEN",
                r.status, r.code, r.message
            )),
            CallError::Refused(r) => Failure::new(format!("keyward refused the call ({} {}: {})", r.status, r.code, r.message)),
        }
    }
}

/// The body of a successful answer: `data` plus the envelope's other fields (paging).
pub type Answer = Value;

impl Client {
    pub fn new(url: &str, token: &str) -> Result<Client, Failure> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::new(format!("--url: \"{base}\" must start with http:// or https://")));
        }
        if token.is_empty() {
            return Err(Failure::new("--token: give the management token (or set KEYWARD_TOKEN)"));
        }
        if token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Failure::new("--token: must not contain spaces or control characters"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .max_redirects(0)
            .user_agent(concat!("keyward-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client { agent, base, token: token.to_string(), scope: String::new() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client, its calls made under `/workspaces/{workspace}/` (that workspace's keys only).
    pub fn within(mut self, workspace: &str) -> Client {
        self.scope = format!("/workspaces/{}", encode(workspace));
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_keyward/v1{}{path}", self.base, self.scope)
    }

    pub fn get(&self, path: &str) -> Result<Answer, CallError> {
        let url = self.url(path);
        let answer = self.agent.get(&url).header("authorization", self.bearer()).call();
        self.finish(&url, answer)
    }

    pub fn delete(&self, path: &str) -> Result<Answer, CallError> {
        let url = self.url(path);
        let answer = self.agent.delete(&url).header("authorization", self.bearer()).call();
        self.finish(&url, answer)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, CallError> {
        self.send("POST", path, body)
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Answer, CallError> {
        self.send("PUT", path, body)
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> Result<Answer, CallError> {
        let url = self.url(path);
        let request = if method == "PUT" { self.agent.put(&url) } else { self.agent.post(&url) };
        let answer = request
            .header("authorization", self.bearer())
            .header("content-type", "application/json")
            .send(body.to_string());
        self.finish(&url, answer)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn finish(
        &self,
        url: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, CallError> {
        let mut response = answer.map_err(|e| CallError::Transport(unreachable(&self.base, &e)))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| CallError::Transport(format!("{url}: the answer could not be read: {e}")))?;
        envelope(status, &text).map_err(|e| match e {
            CallError::Transport(m) => CallError::Transport(format!("{url}: {m}")),
            other => other,
        })
    }
}

/// One line for a call that got no HTTP answer at all.
fn unreachable(base: &str, e: &ureq::Error) -> String {
    let why = match e {
        ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
        ureq::Error::ConnectionFailed => "the connection failed".to_string(),
        ureq::Error::Timeout(_) => "no answer in time".to_string(),
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    format!("cannot reach keyward at {base} ({why}); check --url or KEYWARD_URL")
}

/// Reads the contract's envelope: `{"success", "data", "error_code", "error_message"}`.
pub fn envelope(status: u16, text: &str) -> Result<Answer, CallError> {
    let body: Value = serde_json::from_str(text).map_err(|_| {
        let start: String = text.chars().take(80).filter(|c| !c.is_control()).collect();
        CallError::Transport(format!("HTTP {status} without keyward's JSON envelope (is this keyward?): {start:?}"))
    })?;
    match body.get("success").and_then(Value::as_bool) {
        Some(true) => Ok(body),
        Some(false) => {
            let text_of = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or("").to_string();
            Err(CallError::Refused(Refused {
                status,
                code: text_of("error_code"),
                message: text_of("error_message"),
            }))
        }
        None => Err(CallError::Transport(format!("HTTP {status} without keyward's JSON envelope (is this keyward?)"))),
    }
}

/// The `data` of a successful answer (null when it has none).
pub fn data(answer: &Answer) -> &Value {
    static NULL: Value = Value::Null;
    answer.get("data").unwrap_or(&NULL)
}

/// Percent-encodes a value for a query string or a path segment.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn envelope_success_and_refusal() {
        let ok = envelope(200, r#"{"success":true,"data":[1],"error_code":null,"error_message":null}"#).unwrap();
        assert_eq!(ok["data"][0], 1);
        match envelope(401, r#"{"success":false,"data":null,"error_code":"UNAUTHORIZED","error_message":"bad token"}"#) {
            Err(CallError::Refused(r)) => {
                assert_eq!((r.status, r.code.as_str(), r.message.as_str()), (401, "UNAUTHORIZED", "bad token"));
            }
            other => unreachable!("{other:?}"),
        }
        assert!(matches!(envelope(502, "<html>bad gateway</html>"), Err(CallError::Transport(_))));
        assert!(matches!(envelope(200, "{}"), Err(CallError::Transport(_))));
    }

    #[test]
    fn a_refused_token_is_never_in_the_message() {
        let failure: Failure = CallError::Refused(Refused { status: 401, code: "UNAUTHORIZED".into(), message: "no".into() }).into();
        assert!(failure.to_string().contains("--token"));
    }

    #[test]
    fn client_checks_its_configuration() {
        assert!(Client::new("ftp://x", "t").is_err());
        assert!(Client::new("http://x", "").is_err());
        assert!(Client::new("http://x", "a b").is_err());
        assert_eq!(Client::new("http://x/", "t").unwrap().base(), "http://x");
    }

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(encode("a b/c&d=é"), "a%20b%2Fc%26d%3D%C3%A9");
        assert_eq!(encode("key_01AB-x.y~"), "key_01AB-x.y~");
    }
}
