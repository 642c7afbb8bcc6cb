//! What can go wrong between a node and the engine.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// A seed URL or the engine's setup is unusable: reported at startup.
    Config(String),
    /// No connection could be made: the request was never sent, so retrying it is
    /// safe.
    Unreachable(String),
    /// The connection broke after the request was sent: it may or may not have run.
    Lost(String),
    /// The node answered something that is not RESP, or not what was asked.
    Protocol(String),
    /// Redirects or retries went on past their bound.
    GaveUp(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Config(m) => write!(f, "engine configuration: {m}"),
            EngineError::Unreachable(m) => write!(f, "engine unreachable: {m}"),
            EngineError::Lost(m) => write!(
                f,
                "engine connection lost, the command may or may not have run: {m}"
            ),
            EngineError::Protocol(m) => write!(f, "engine protocol error: {m}"),
            EngineError::GaveUp(m) => write!(f, "engine did not settle: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}
