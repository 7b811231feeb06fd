//! The stable machine codes of every answer keyward gives, with their HTTP status.

use serde::{Deserialize, Serialize};

/// `VALID` or the reason a request was refused; serialised as the contract's `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    Valid,
    BadRequest,
    MissingKey,
    MalformedKey,
    UnknownKey,
    KeyExpired,
    KeyRevoked,
    WorkspaceMismatch,
    PermissionDenied,
    IpNotAllowed,
    EventNotAllowed,
    AttributeNotAllowed,
    ProfileMismatch,
    RouteNotAllowed,
    OriginNotAllowed,
    RateLimited,
    StoreUnavailable,
    OriginUnavailable,
    OriginTimeout,
    /// The key's credits cannot pay for the request (contract section 8). Last in the list so
    /// that the earlier codes keep their positions in `ALL`.
    UsageExceeded,
    /// A token (contract section 15) past its `exp`.
    TokenExpired,
    /// A token that is not one of this deployment's: bad form, signature, `kid`, algorithm,
    /// issuer, not yet valid, or issued before its key's `revoke_tokens`.
    TokenInvalid,
}

impl Code {
    /// Every code, in declaration order (`Code::ALL[code as usize] == code`).
    pub const ALL: [Code; 22] = [
        Code::Valid,
        Code::BadRequest,
        Code::MissingKey,
        Code::MalformedKey,
        Code::UnknownKey,
        Code::KeyExpired,
        Code::KeyRevoked,
        Code::WorkspaceMismatch,
        Code::PermissionDenied,
        Code::IpNotAllowed,
        Code::EventNotAllowed,
        Code::AttributeNotAllowed,
        Code::ProfileMismatch,
        Code::RouteNotAllowed,
        Code::OriginNotAllowed,
        Code::RateLimited,
        Code::StoreUnavailable,
        Code::OriginUnavailable,
        Code::OriginTimeout,
        Code::UsageExceeded,
        Code::TokenExpired,
        Code::TokenInvalid,
    ];

    /// The HTTP status the gate answers with for this code.
    pub fn status(self) -> u16 {
        match self {
            Code::Valid => 200,
            Code::BadRequest => 400,
            Code::MissingKey
            | Code::MalformedKey
            | Code::UnknownKey
            | Code::KeyExpired
            | Code::KeyRevoked
            | Code::WorkspaceMismatch
            | Code::TokenExpired
            | Code::TokenInvalid => 401,
            Code::PermissionDenied
            | Code::IpNotAllowed
            | Code::EventNotAllowed
            | Code::AttributeNotAllowed
            | Code::ProfileMismatch
            | Code::RouteNotAllowed
            | Code::OriginNotAllowed => 403,
            Code::RateLimited | Code::UsageExceeded => 429,
            Code::StoreUnavailable => 503,
            Code::OriginUnavailable => 502,
            Code::OriginTimeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Valid => "VALID",
            Code::BadRequest => "BAD_REQUEST",
            Code::MissingKey => "MISSING_KEY",
            Code::MalformedKey => "MALFORMED_KEY",
            Code::UnknownKey => "UNKNOWN_KEY",
            Code::KeyExpired => "KEY_EXPIRED",
            Code::KeyRevoked => "KEY_REVOKED",
            Code::WorkspaceMismatch => "WORKSPACE_MISMATCH",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::IpNotAllowed => "IP_NOT_ALLOWED",
            Code::EventNotAllowed => "EVENT_NOT_ALLOWED",
            Code::AttributeNotAllowed => "ATTRIBUTE_NOT_ALLOWED",
            Code::ProfileMismatch => "PROFILE_MISMATCH",
            Code::RouteNotAllowed => "ROUTE_NOT_ALLOWED",
            Code::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            Code::RateLimited => "RATE_LIMITED",
            Code::StoreUnavailable => "STORE_UNAVAILABLE",
            Code::OriginUnavailable => "ORIGIN_UNAVAILABLE",
            Code::OriginTimeout => "ORIGIN_TIMEOUT",
            Code::UsageExceeded => "USAGE_EXCEEDED",
            Code::TokenExpired => "TOKEN_EXPIRED",
            Code::TokenInvalid => "TOKEN_INVALID",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for code in Code::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn all_is_in_declaration_order() {
        for (i, code) in Code::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i, "{code:?}");
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Code::MissingKey.status(), 401);
        assert_eq!(Code::WorkspaceMismatch.status(), 401);
        assert_eq!(Code::RouteNotAllowed.status(), 403);
        assert_eq!(Code::OriginNotAllowed.status(), 403);
        assert_eq!(Code::BadRequest.status(), 400);
        assert_eq!(Code::StoreUnavailable.status(), 503);
        assert_eq!(Code::OriginUnavailable.status(), 502);
        assert_eq!(Code::OriginTimeout.status(), 504);
        assert_eq!(Code::RateLimited.status(), 429);
        assert_eq!(Code::UsageExceeded.status(), 429);
        assert_eq!(Code::TokenExpired.status(), 401);
        assert_eq!(Code::TokenInvalid.status(), 401);
    }
}
