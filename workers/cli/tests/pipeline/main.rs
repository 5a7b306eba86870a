//! Integration tests: the real binaries against a real broker and a real PostgreSQL.

mod compute;
mod faults;
mod helpers;
mod persister;
mod retries;
