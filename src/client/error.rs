//! [`ClientError`], the errors of client calls.

use std::fmt;

use reqwest::StatusCode;

/// An error from a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker responded with an error status and its
    /// `{"error": {"code", "message"}}` body.
    #[error("{message} (HTTP {}, {code})", status.as_u16())]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The broker's machine-readable code, e.g. `not_found`; `unknown`
        /// when the body was not a Ferry error.
        code: String,
        /// The broker's message for people.
        message: String,
    },

    /// No broker in the list accepted a connection, or, for a GET, every
    /// broker failed to respond.
    #[error("no broker reachable: {}", FailureList(.failures))]
    Unreachable {
        /// Each broker tried, in order, with its error.
        failures: Vec<BrokerFailure>,
    },

    /// A request failed after it may have reached the broker, so it was not
    /// sent to another one: the broker may or may not have applied it.
    #[error("request to {url} failed: {}", error_chain(.source))]
    Request {
        /// The request URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },

    /// A success response whose body was not the expected JSON.
    #[error("invalid response from {url}: {source}")]
    Decode {
        /// The request URL.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A broker URL that is not an absolute http or https URL.
    #[error("invalid broker URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The problem with the URL.
        reason: String,
    },

    /// The client was built with no broker URL.
    #[error("no broker URL given")]
    NoBrokers,

    /// The token contains characters that an HTTP header cannot carry.
    #[error("invalid token: it contains characters not allowed in an HTTP header")]
    InvalidToken,

    /// The TLS setup failed, e.g. the CA certificate did not parse.
    #[error("TLS setup failed: {0}")]
    Tls(String),

    /// A WebSocket stream failed after it was open.
    #[error("WebSocket stream {url} failed: {source}")]
    WebSocket {
        /// The stream URL.
        url: String,
        /// The WebSocket error.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },

    /// The broker sent an error frame on a WebSocket stream.
    #[error("stream error: {message} ({code})")]
    Stream {
        /// The broker's code, e.g. `invalid_argument`.
        code: String,
        /// The broker's message.
        message: String,
    },

    /// The broker sent a WebSocket frame this client does not understand.
    #[error("unexpected stream frame: {0}")]
    UnexpectedFrame(String),
}

impl ClientError {
    /// Returns the HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Returns the broker's error code of an [`ClientError::Api`] or
    /// [`ClientError::Stream`] error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } | ClientError::Stream { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One broker that could not be reached, and the error.
#[derive(Debug)]
pub struct BrokerFailure {
    /// The broker's base URL.
    pub broker: String,
    /// What failed.
    pub error: String,
}

struct FailureList<'a>(&'a [BrokerFailure]);

impl fmt::Display for FailureList<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, failure) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str("; ")?;
            }
            write!(formatter, "{}: {}", failure.broker, failure.error)?;
        }
        Ok(())
    }
}

/// Joins the messages of `error`'s source chain with `: `. reqwest's own
/// message only states that sending failed, and the cause (refused, timed
/// out, certificate) is further down the chain.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}
