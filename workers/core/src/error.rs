//! The error layers of the core: what a handler says about one message ([`HandlerError`], with
//! an [`ErrorClass`]), and what stops a whole stage ([`PipelineError`]).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::config::ConfigError;

/// What kind of failure a message met; kept with retries and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The message is not the JSON it should be.
    Decode,
    /// It decodes, but breaks its kind's schema (a missing field, an unknown operation).
    Schema,
    /// A worker's output could not be serialized: a bug, not the input's fault.
    Serialize,
    /// A result failed the persister's validation.
    InvalidResult,
    /// The database refused the data itself (SQLSTATE classes 22 and 23).
    DatabaseRefused,
    /// A call took longer than the stage allows.
    Timeout,
    /// A dependency asked us to slow down (HTTP 429).
    RateLimited,
    /// A dependency is down or failing (5xx, connection refused).
    Unavailable,
    /// Credentials were refused (HTTP 401/403).
    Unauthorized,
    /// A dependency refused the request itself (any other 4xx): asking again cannot help.
    Refused,
    /// A dependency answered, but not in the shape its API promises.
    BadResponse,
    /// The broker can never accept an output (too large, invalid topic, not authorized).
    Undeliverable,
    /// A retried message had lost its way back.
    Misrouted,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Schema => "schema",
            Self::Serialize => "serialize",
            Self::InvalidResult => "invalid_result",
            Self::DatabaseRefused => "database_refused",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Unauthorized => "unauthorized",
            Self::Refused => "refused",
            Self::BadResponse => "bad_response",
            Self::Undeliverable => "undeliverable",
            Self::Misrouted => "misrouted",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler's verdict on a message it could not turn into outputs.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HandlerError {
    /// Worth another attempt later (a timeout, a 5xx, a rate limit): goes to a retry tier, or is
    /// retried in place by a per-key stage. `retry_after` is the earliest next attempt a
    /// dependency asked for (an HTTP `Retry-After`).
    #[error("{class}: {message}")]
    Transient {
        class: ErrorClass,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed (undecodable, schema violation): goes straight to the dead letters.
    #[error("{class}: {message}")]
    Permanent { class: ErrorClass, message: String },
    /// Nothing this stage handles can succeed now (revoked credentials): the stage stops, the
    /// message stays uncommitted, instead of dead-lettering the whole topic.
    #[error("{class}: {message}")]
    Fatal { class: ErrorClass, message: String },
    /// Shutdown came before the work was durable: leave the offset uncommitted, so the message
    /// is delivered again after the restart.
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl HandlerError {
    pub fn transient(class: ErrorClass, message: impl ToString) -> Self {
        Self::Transient {
            class,
            message: message.to_string(),
            retry_after: None,
        }
    }

    pub fn permanent(class: ErrorClass, message: impl ToString) -> Self {
        Self::Permanent {
            class,
            message: message.to_string(),
        }
    }

    pub fn fatal(class: ErrorClass, message: impl ToString) -> Self {
        Self::Fatal {
            class,
            message: message.to_string(),
        }
    }

    /// A transient error that should not be retried before `delay`.
    pub fn retry_after(class: ErrorClass, message: impl ToString, delay: Duration) -> Self {
        Self::Transient {
            class,
            message: message.to_string(),
            retry_after: Some(delay),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// The earliest next attempt a dependency asked for.
    pub fn earliest_retry(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The kind of failure, kept in dead-letter headers; `None` for an interruption.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Self::Transient { class, .. }
            | Self::Permanent { class, .. }
            | Self::Fatal { class, .. } => Some(*class),
            Self::Interrupted => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Transient { message, .. }
            | Self::Permanent { message, .. }
            | Self::Fatal { message, .. } => message.clone(),
            Self::Interrupted => "interrupted by shutdown".into(),
        }
    }
}

/// What stops a stage (or keeps it from starting). Every variant but a clean shutdown ends
/// the process with a non-zero status, so that its supervisor restarts it.
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
    /// An existing topic has a cleanup policy that loses messages and could not be changed
    /// (e.g. no authorization to alter it): an operator must change it.
    #[error(
        "could not read or change the configuration of topic {topic}: {code} (its cleanup.policy \
         must be delete, compact for kv.state only: README, \"Upgrading\")"
    )]
    TopicConfig {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// A handler returned a fatal error.
    #[error("stage stopped by a fatal error ({class}): {message}")]
    Fatal { class: ErrorClass, message: String },
    /// A handler or a task of the stage panicked: a bug, never hidden.
    #[error("a task of the stage panicked: {0}")]
    Panicked(String),
    /// A handler broke the loop's contract (e.g. a wrong number of outcomes for a batch).
    #[error("handler broke its contract: {0}")]
    BrokenContract(String),
    /// Too many recent messages were failed by a dependency (attempts spent on transient
    /// failures, a topic the broker refuses): it keeps failing.
    #[error(
        "{dead} of the last {window} messages were dead-lettered by a failing dependency (their \
         attempts spent, or a topic the broker refuses) (limit {max_share}); stopping rather \
         than dead-lettering the whole topic"
    )]
    TooManyDeadLetters {
        dead: usize,
        window: usize,
        max_share: f64,
    },
}

impl PipelineError {
    /// A broker that is down or unreachable recovers; a bad configuration does not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }
}
