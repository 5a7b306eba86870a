//! sluice's database: where it is, the pool, the migrations, and the reads and small writes the
//! `sluice` program (and later a gateway) makes.
//!
//! # Layout
//! - [`pool`]: [`DatabaseConfig`], connecting, migrating, and which errors pass by themselves.
//! - [`queries`]: claiming a job id, job status, live workers.
//! - [`dead_letters`]: listing dead letters, and claiming each for exactly one replay.
//! - [`kv`]: the key-value store's table, read and rebuilt.
//! - [`qa`]: questions' outcomes, and whether a question has a validated answer already.
//! - [`ml`]: the model registry.
//! - [`notify`]: what a notification on [`JOBS_CHANNEL`] says.
//! - [`waiter`]: the [`JobWaiter`], one listening connection for every job awaited in a process.

pub mod dead_letters;
pub mod kv;
pub mod ml;
pub mod notify;
pub mod pool;
pub mod qa;
pub mod queries;
pub mod waiter;

pub use pool::DatabaseConfig;
pub use waiter::JobWaiter;

/// Channel notified whenever job rows changed; [`notify`] describes the payload.
pub const JOBS_CHANNEL: &str = "sluice_jobs";
