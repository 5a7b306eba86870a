//! Names of the retry and dead-letter metadata that travels in Kafka headers.
//!
//! These headers are trusted only on sluice's internal topics (retry tiers, each stage's
//! returns topic, the dead letters). On a stage's public input topics the core drops every
//! header with the [`PREFIX`], so a producer cannot forge an attempt count or a destination.

/// Every sluice header starts with this.
pub const PREFIX: &str = "sluice-";

/// Failed attempts so far; absent on a message's first delivery.
pub const FAILURES: &str = "sluice-failures";
/// Where the message failed first: recorded with a dead letter, and where a replay sends it.
pub const ORIGINAL_TOPIC: &str = "sluice-original-topic";
pub const ORIGINAL_PARTITION: &str = "sluice-original-partition";
pub const ORIGINAL_OFFSET: &str = "sluice-original-offset";
/// The stage's own returns topic: where the retry service sends the message once it is due.
pub const RETURN_TOPIC: &str = "sluice-return-topic";
pub const FIRST_FAILURE_MS: &str = "sluice-first-failure-ms";
pub const ERROR_CLASS: &str = "sluice-error-class";
pub const ERROR: &str = "sluice-error";
/// On a retry topic: when (Unix ms) the message may go back to its stage.
pub const DUE_MS: &str = "sluice-due-ms";
/// The job a dead letter belongs to, when the message could be decoded that far.
pub const JOB_ID: &str = "sluice-job-id";
/// Set on a dead letter whose payload was cut to fit the broker's message size.
pub const TRUNCATED_FROM: &str = "sluice-truncated-from";
/// Set on a cut dead letter that lost some of the message's own headers to fit: how many.
pub const HEADERS_DROPPED: &str = "sluice-headers-dropped";

/// Headers that describe one failure; replaced, never accumulated, on the next one.
pub const PER_FAILURE: [&str; 4] = [FAILURES, ERROR_CLASS, ERROR, DUE_MS];
