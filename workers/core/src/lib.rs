//! sluice's shared core: typed configuration, the one consume → handle → publish → commit loop
//! with its execution modes, retry routing, dead letters and heartbeats.
//!
//! A worker service implements [`Handler`] for its domain and calls [`run_stage`] with a
//! [`Stage`]; everything about delivery guarantees lives here.
//!
//! # Layout
//! Lower modules never use higher ones:
//! - [`config`], [`error`], [`shutdown`], [`pause`]: configuration, the error layers, signals
//!   and logs, waiting out what is down.
//! - [`headers`], [`kafka`], [`producer`]: reading headers; client configs, the [`Publisher`]
//!   and the acknowledging producer under it.
//! - [`job`]: the [`Job`] a handler sees, its [`Cx`] and the [`Handler`] trait.
//! - [`retry`]: where a failed message goes (a retry tier or the dead letters).
//! - [`offsets`], [`limits`], [`stats`]: commit points, rate and dead-letter limits, counters.
//! - [`context`], [`topics`], [`heartbeat`]: what a process shares, topic creation, liveness.
//! - [`consumer`]: the [`consumer::Feed`] of messages and rebalances, with pausing.
//! - [`blocking`]: CPU-bound handlers on a bounded thread pool.
//! - [`pipeline`]: the loop and its [`Execution`] modes.

pub mod blocking;
pub mod config;
pub mod consumer;
pub mod context;
pub mod error;
pub mod headers;
pub mod heartbeat;
pub mod job;
pub mod kafka;
pub mod limits;
pub mod offsets;
pub mod pause;
pub mod pipeline;
pub mod producer;
pub mod retry;
pub mod shutdown;
pub mod stats;
pub mod topics;

pub use context::StageContext;
pub use error::{ErrorClass, HandlerError, PipelineError};
pub use job::{Cx, Handler, Job, Outcome, ReadFrom, TopicPartition};
pub use kafka::{Output, PublishError, Publisher};
pub use pipeline::{run_stage, Execution, Stage};
