//! The LLMs a worker can ask: [`stub`], [`openai`] and [`gemini`], behind one [`Provider`], and
//! what a failed call means for the question ([`ProviderError`] → [`HandlerError`]; a refusal
//! that may be the configuration's is first checked by a [`probe`]).
//!
//! The API key is an [`ApiKey`]: it prints as `***`, and every error text that came back from a
//! provider has it cut out before it can reach a log, a dead letter or a row.

pub mod gemini;
pub mod http;
pub mod openai;
pub mod probe;
pub mod stub;

use std::time::Duration;

use sluice_core::{ErrorClass, HandlerError};
use thiserror::Error;

use crate::config::{LlmConfig, ProviderKind};

/// A secret: shown as `***` by `Debug`, read only where a request is built.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for a request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced, for anything that may be shown.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub answer: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub prompt_tokens: Option<u64>,
    pub answer_tokens: Option<u64>,
}

/// Why a call gave no answer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProviderError {
    #[error("rate limited (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("provider unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("no answer within the timeout")]
    Timeout,
    /// A wrong key, or a proxy refusing the question with the same status: a [`probe`] tells.
    #[error("credentials refused (HTTP {0}); check LLM_API_KEY")]
    Unauthorized(u16),
    /// No such endpoint or model (a wrong `LLM_BASE_URL` or `LLM_MODEL`), or again a proxy
    /// refusing the question.
    #[error("endpoint or model not found (HTTP 404); check LLM_BASE_URL and LLM_MODEL")]
    NotFound,
    #[error("request refused (HTTP {status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Nothing could be sent as configured (a URL or key that is no valid request).
    #[error("cannot call the provider as configured: {0}")]
    Misconfigured(String),
}

impl ProviderError {
    /// What a refusal was, when it may be the configuration's (a wrong key, URL, model or
    /// parameter, an account out of credit: every question would meet it) rather than the
    /// question's: which one, only a [`probe`] can tell. Not a malformed answer: a provider
    /// sends the odd one at random, and a probe meeting one by chance would stop the worker.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Self::Unauthorized(status) => Some(format!("HTTP {status}")),
            Self::NotFound => Some("HTTP 404".into()),
            Self::Refused { status, detail } => Some(format!("HTTP {status}: {detail}")),
            _ => None,
        }
    }
}

impl From<ProviderError> for HandlerError {
    /// Rate limits, outages and timeouts pass: retry tiers. Refusals and nonsense do not: dead
    /// letters. Refused credentials, or an endpoint that is not there, refuse every question:
    /// the worker stops rather than dead-letter the whole topic. (For a question's own call,
    /// that holds once a [`probe`] is refused too: see [`probe::RefusalProbe::meaning`].)
    fn from(error: ProviderError) -> Self {
        let message = error.to_string();
        match error {
            ProviderError::RateLimited { retry_after } => HandlerError::Transient {
                class: ErrorClass::RateLimited,
                message,
                retry_after,
            },
            ProviderError::Unavailable { retry_after, .. } => HandlerError::Transient {
                class: ErrorClass::Unavailable,
                message,
                retry_after,
            },
            ProviderError::Timeout => HandlerError::transient(ErrorClass::Timeout, message),
            ProviderError::Unauthorized(_) => {
                HandlerError::fatal(ErrorClass::Unauthorized, message)
            }
            ProviderError::NotFound | ProviderError::Misconfigured(_) => {
                HandlerError::fatal(ErrorClass::Refused, message)
            }
            ProviderError::Refused { .. } => HandlerError::permanent(ErrorClass::Refused, message),
            ProviderError::Malformed(_) => {
                HandlerError::permanent(ErrorClass::BadResponse, message)
            }
        }
    }
}

/// The LLM a worker asks.
pub enum Provider {
    Stub(stub::Stub),
    OpenAi(openai::OpenAi),
    Gemini(gemini::Gemini),
}

impl Provider {
    pub fn from_config(config: &LlmConfig) -> anyhow::Result<Self> {
        Ok(match config.provider {
            ProviderKind::Stub => Self::Stub(stub::Stub::from_config(config)?),
            ProviderKind::OpenAi => Self::OpenAi(openai::OpenAi::new(http::Http::new(config)?)),
            ProviderKind::Gemini => Self::Gemini(gemini::Gemini::new(http::Http::new(config)?)),
        })
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Stub(_) => ProviderKind::Stub,
            Self::OpenAi(_) => ProviderKind::OpenAi,
            Self::Gemini(_) => ProviderKind::Gemini,
        }
    }

    /// Asks `question`, giving up after `timeout` when there is one.
    pub async fn ask(
        &self,
        question: &str,
        timeout: Option<Duration>,
    ) -> Result<Asked, ProviderError> {
        match self {
            Self::Stub(stub) => Ok(stub.ask(question).await),
            Self::OpenAi(openai) => openai.ask(question, timeout).await,
            Self::Gemini(gemini) => gemini.ask(question, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("sk-secret-123");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(
            key.redact("bad key sk-secret-123 given"),
            "bad key [redacted] given"
        );
    }

    #[test]
    fn failures_map_to_the_pipeline_s_classes() {
        let wait = Some(Duration::from_secs(7));
        let limited = HandlerError::from(ProviderError::RateLimited { retry_after: wait });
        assert!(limited.is_retryable());
        assert_eq!(limited.earliest_retry(), wait);
        assert!(HandlerError::from(ProviderError::Timeout).is_retryable());
        assert!(matches!(
            HandlerError::from(ProviderError::Unauthorized(401)),
            HandlerError::Fatal { .. }
        ));
        assert!(matches!(
            HandlerError::from(ProviderError::NotFound),
            HandlerError::Fatal { .. }
        ));
        assert!(matches!(
            HandlerError::from(ProviderError::Malformed("x".into())),
            HandlerError::Permanent { .. }
        ));
        assert!(matches!(
            HandlerError::from(ProviderError::Refused {
                status: 400,
                detail: "x".into()
            }),
            HandlerError::Permanent { .. }
        ));
    }
}
