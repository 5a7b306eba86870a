//! Integration tests: the real binaries against a real broker and a real PostgreSQL.

mod broker;
mod cli;
mod cluster;
mod compute;
mod faults;
mod guards;
mod helpers;
mod kv;
mod ml;
mod modes;
mod persister;
mod qa;
mod rebalance;
mod restarts;
mod retries;
