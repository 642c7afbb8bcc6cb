//! Ably error codes: one table, one error type, one conversion to HTTP responses.
//!
//! Every failure a client can see is an [`AblyError`]: a code from [`ErrorCode`], the
//! HTTP status that code implies and a message. On the WebSocket it travels as the
//! `error` field of a protocol message (see [`crate::protocol::ErrorInfo`]); on REST it
//! becomes `{"error":{message,code,statusCode,href}}` with `X-Ably-ErrorCode` and
//! `X-Ably-ErrorMessage` headers, built in exactly one place ([`AblyError::into_response`]).

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::protocol::ErrorInfo;

/// Declares the error table once: variant, numeric code, HTTP status, default text.
macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $text:literal;)*) => {
        /// Ably error codes Tidewire emits, with the HTTP status and default text of each.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// The numeric Ably code (e.g. 40160).
            pub fn code(self) -> u32 {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status Ably pairs with this code.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Default human-readable text.
            pub fn text(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text,)* }
            }

            /// Every code in the table (used by the table's own tests).
            pub fn all() -> &'static [ErrorCode] {
                &[$(ErrorCode::$variant,)*]
            }
        }
    };
}

error_codes! {
    BadRequest = 40000, 400, "Bad request";
    InvalidRequestBody = 40001, 400, "Invalid request body";
    InvalidParameterValue = 40003, 400, "Invalid parameter value";
    MessageTooLarge = 40009, 413, "Maximum message length exceeded";
    InvalidChannelName = 40010, 400, "Invalid channel name";
    InvalidClientId = 40012, 400, "Invalid clientId for credentials";
    InvalidMessageData = 40013, 400, "Invalid message data or encoding";
    UnsupportedProtocolVersion = 40017, 400, "Unsupported protocol version";
    Unauthorized = 40100, 401, "Unauthorized";
    InvalidCredentials = 40101, 401, "Invalid credentials";
    IncompatibleCredentials = 40102, 401, "Incompatible credentials";
    TimestampNotCurrent = 40104, 401, "Timestamp not current";
    NonceReplayed = 40105, 401, "Nonce value replayed";
    NoCredentials = 40106, 401, "Unable to obtain credentials from given parameters";
    ConnectionLimit = 40111, 401, "Connection limits exceeded";
    TokenError = 40140, 401, "Token error";
    TokenRevoked = 40141, 401, "Token revoked";
    TokenExpired = 40142, 401, "Token expired";
    TokenUnrecognised = 40143, 401, "Token unrecognised";
    InvalidJwt = 40144, 401, "Invalid JWT format";
    InvalidTokenFormat = 40145, 401, "Invalid token format";
    CapabilityDenied = 40160, 401, "Operation not permitted with provided capability";
    ClientIdRequired = 40161, 401, "Operation requires an identified client";
    ModeNotRequested = 40165, 401, "Operation not permitted by the channel modes requested when attaching";
    NotFound = 40400, 404, "Not found";
    MethodNotAllowed = 40500, 405, "Method not allowed";
    RateLimited = 42910, 429, "Rate limit exceeded; request rejected";
    Internal = 50000, 500, "Internal error";
    ConnectionFailed = 80000, 400, "Connection failed";
    Disconnected = 80003, 400, "Disconnected";
    ConnectionExpired = 80008, 400, "Unable to recover connection (connection expired)";
    IncompatibleResumeAuth = 80011, 400, "Unable to recover connection (incompatible auth params)";
    ProtocolError = 80013, 400, "Protocol error";
    ConnectionClosed = 80017, 400, "Connection closed";
    InvalidConnectionKey = 80018, 400, "Invalid connection key";
    ChannelOperationFailed = 90000, 400, "Channel operation failed";
    ChannelContinuityLost = 90003, 400, "Unable to recover channel (messages expired)";
    TooManyChannels = 90010, 400, "Maximum number of channels per connection exceeded";
    PresenceNoClientId = 91000, 400, "Unable to enter presence channel (no clientId)";
    PresenceLimit = 91003, 400, "Unable to enter presence channel (maximum member limit exceeded)";
    MutableMessagesDisabled = 93002, 400, "Message updates and deletes are not enabled for this channel";
}

/// Documentation link Ably puts in every error.
const HREF_BASE: &str = "https://help.ably.io/error/";

/// An error reported to a client, either on the WebSocket or over REST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AblyError {
    pub code: ErrorCode,
    pub message: String,
}

impl AblyError {
    /// An error with a specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AblyError {
            code,
            message: message.into(),
        }
    }

    /// An error carrying the table's default text.
    pub fn of(code: ErrorCode) -> Self {
        AblyError::new(code, code.text())
    }

    /// Whether the client treats this as a token problem it can fix by renewing its
    /// token (Ably codes 40140..=40149).
    pub fn is_token_error(&self) -> bool {
        (40140..=40149).contains(&self.code.code())
    }

    /// The wire form for protocol messages and REST bodies.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo {
            message: Some(self.message.clone()),
            code: Some(self.code.code()),
            status_code: Some(self.code.status()),
            href: Some(format!("{HREF_BASE}{}", self.code.code())),
        }
    }

    /// The HTTP status as an axum type.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_REQUEST)
    }

    /// The REST body `{"error":{...}}`.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.to_info() })
    }
}

impl fmt::Display for AblyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

impl std::error::Error for AblyError {}

impl IntoResponse for AblyError {
    fn into_response(self) -> Response {
        let body = self.body_json().to_string();
        let mut resp = (self.status(), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-ably-errorcode", HeaderValue::from(self.code.code()));
        // Header values must be visible ASCII; anything else is dropped rather than failing.
        let safe: String = self
            .message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&safe) {
            headers.insert("x-ably-errormessage", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_codes_are_unique_and_statuses_match_prefix() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::all() {
            assert!(seen.insert(c.code()), "duplicate {}", c.code());
            // Ably's convention: the first three digits of 4xxxx codes are the status.
            if c.code() < 50000 && *c != ErrorCode::MessageTooLarge {
                assert_eq!(c.code() / 100, c.status() as u32, "{:?}", c);
            }
        }
    }

    #[test]
    fn token_error_range() {
        assert!(AblyError::of(ErrorCode::TokenExpired).is_token_error());
        assert!(!AblyError::of(ErrorCode::CapabilityDenied).is_token_error());
    }

    #[test]
    fn body_shape() {
        let v = AblyError::of(ErrorCode::CapabilityDenied).body_json();
        assert_eq!(v["error"]["code"], 40160);
        assert_eq!(v["error"]["statusCode"], 401);
        assert_eq!(v["error"]["href"], "https://help.ably.io/error/40160");
    }
}
