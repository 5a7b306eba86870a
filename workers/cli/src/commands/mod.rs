//! One module per `sluice` subcommand.

pub mod bench;
pub mod calc;
pub mod dlq;
pub mod job;
pub mod kv;
pub mod ml;
pub mod ml_bench;
pub mod qa;
pub mod traffic;
pub mod workers;
