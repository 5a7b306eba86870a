//! The two error layers of the core: what a handler says about one message, and what stops a
//! whole stage.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::config::ConfigError;

/// A handler's verdict on a message it could not turn into outputs.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HandlerError {
    /// Worth another attempt later (a timeout, a 5xx, a rate limit): goes to a retry tier.
    #[error("{class}: {message}")]
    Transient { class: String, message: String },
    /// Will never succeed (undecodable, schema violation): goes straight to the dead letters.
    #[error("{class}: {message}")]
    Permanent { class: String, message: String },
    /// Shutdown came before the work was durable: leave the offset uncommitted, so the message
    /// is delivered again after the restart.
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl HandlerError {
    pub fn transient(class: &str, message: impl ToString) -> Self {
        Self::Transient {
            class: class.to_string(),
            message: message.to_string(),
        }
    }

    pub fn permanent(class: &str, message: impl ToString) -> Self {
        Self::Permanent {
            class: class.to_string(),
            message: message.to_string(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// A short machine-readable name for the kind of failure, kept in dead-letter headers.
    pub fn class(&self) -> &str {
        match self {
            Self::Transient { class, .. } | Self::Permanent { class, .. } => class,
            Self::Interrupted => "interrupted",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Transient { message, .. } | Self::Permanent { message, .. } => message.clone(),
            Self::Interrupted => "interrupted by shutdown".into(),
        }
    }
}

/// What stops a stage (or keeps it from starting).
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("could not create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl PipelineError {
    /// A broker that is down or unreachable recovers; a bad configuration does not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }
}
