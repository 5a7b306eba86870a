//! sluice's shared core: typed configuration, the job envelope, topic names, the one
//! consume → handle → publish → commit loop, retry tiers, dead letters and heartbeats.
//!
//! A worker service implements [`pipeline::Handler`] for its domain and calls
//! [`pipeline::run_stage`]; everything about delivery guarantees lives here.

pub mod config;
pub mod envelope;
pub mod error;
pub mod heartbeat;
pub mod kafka;
pub mod offsets;
pub mod pipeline;
pub mod retry;
pub mod shutdown;
pub mod topics;

pub use envelope::{Envelope, JobResult};
pub use error::{HandlerError, PipelineError};
pub use kafka::{Output, Publisher};
pub use pipeline::{run_stage, Handler, Job, Outcome, StageContext};
