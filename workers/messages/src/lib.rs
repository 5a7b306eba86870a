//! The messages sluice's stages exchange, shared by the workers, the persister and the `sluice`
//! program, so that none of them depends on another's crate.
//!
//! # Layout
//! - [`envelope`]: the job envelope every producer publishes, and the result every worker
//!   publishes for the persister.
//! - [`header`]: names of the retry and dead-letter metadata that travels in Kafka headers.
//! - [`topics`]: every topic and consumer-group name, under one prefix.
//! - [`heartbeat`]: the liveness message of every service.
//! - [`compute`]: the calculator's requests, answers and sum_squares parts (seed 002).
//! - [`kv`]: the key-value store's updates and applied changes (seed 000).
//! - [`qa`]: questions, LLM answers and scored outcomes (seeds 003 and 004).
//! - [`ml`]: training jobs, prediction requests and their answers (seeds 000 and 001).

pub mod compute;
pub mod envelope;
pub mod header;
pub mod heartbeat;
pub mod kv;
pub mod ml;
pub mod qa;
pub mod topics;

pub use envelope::{Envelope, JobResult};
pub use topics::Topics;
