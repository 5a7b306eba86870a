//! Where the database is, connecting to it, and the schema's migrations.

use std::time::Duration;

use sluice_core::config::{env_or, env_string, ConfigError};
use sluice_core::pause::Pause;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// Where the results live.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: env_string(
                "DATABASE_URL",
                "postgres://sluice:sluice@127.0.0.1:5432/sluice",
            ),
            max_connections: env_or("DATABASE_MAX_CONNECTIONS", 4)?,
        })
    }

    /// The URL without its password, for messages.
    pub fn redacted_url(&self) -> String {
        let url = &self.url;
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://…{}", &url[..scheme], &url[at..])
            }
            _ => url.to_string(),
        }
    }
}

pub async fn connect(db: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&db.url)
        .await
}

/// A pool that connects on first use: for a service whose reads are optional, so that it
/// starts (and works) while the database is down.
pub fn connect_lazy(db: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(db.max_connections)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&db.url)
}

/// Connects (waiting for the database while it is unreachable) and applies the migrations.
pub async fn connect_and_migrate(
    db: &DatabaseConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let mut pause = Pause::starting_at(Duration::from_millis(200));
    let pool = loop {
        match connect(db).await {
            Ok(pool) => break pool,
            Err(e) if is_transient(&e) && !shutdown.is_cancelled() => {
                tracing::warn!(error = %e, "database not reachable, retrying");
                pause.wait(shutdown).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies the migrations not applied yet (`migrations/`, built in).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../migrations").run(pool).await
}

/// Whether the database refused the data itself: the same rows would be refused again.
/// SQLSTATE classes 22 (data exception: a `\u0000` in jsonb, a value out of range), 23
/// (integrity constraint) and 54 (program limit exceeded: an index row or a value too large).
/// Anything else — a connection lost, a password rotated, a read-only failover, a permission or
/// a lock timeout — says nothing about the data and is waited out.
pub fn refuses_data(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["22", "23", "54"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// A failure that goes away by itself: the connection, the server's state, a deadlock.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_left_out_of_messages() {
        let db = DatabaseConfig {
            url: "postgres://sluice:secret@db:5432/sluice".into(),
            max_connections: 1,
        };
        assert_eq!(db.redacted_url(), "postgres://…@db:5432/sluice");
    }
}
