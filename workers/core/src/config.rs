//! Typed configuration, read once from the environment (and `.env`, when present).
//!
//! One struct per concern; every variable is documented with its default in `.env.example`.
//! Kafka client properties that sluice does not model (SASL, SSL, …) pass straight through:
//! `KAFKA_OPT_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
}

/// Loads `.env` from the working directory when there is one. Variables already set win.
pub fn load_dotenv() {
    let _ = dotenvy::dotenv();
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(name: &str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Reads `name`, falling back to `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e| invalid(name, &raw, e)),
    }
}

pub fn env_string(name: &str, default: &str) -> String {
    var(name).unwrap_or_else(|| default.to_string())
}

pub fn env_duration(name: &str, default: &str) -> Result<Duration, ConfigError> {
    let raw = env_string(name, default);
    parse_duration(&raw).map_err(|e| invalid(name, &raw, e))
}

/// Parses `250ms`, `5s`, `2m`, `1h`; a bare number means milliseconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 5s or 2m, got {raw:?}"))?;
    let millis = match unit {
        "" | "ms" => number,
        "s" => number * 1_000.0,
        "m" => number * 60_000.0,
        "h" => number * 3_600_000.0,
        other => return Err(format!("unknown duration unit {other:?}")),
    };
    if !millis.is_finite() || millis < 0.0 {
        return Err(format!("duration out of range: {raw:?}"));
    }
    Ok(Duration::from_micros((millis * 1_000.0) as u64))
}

/// How to reach the broker, and how sluice's topics are named and sized.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Prefix of every topic and consumer group, so several pipelines (or tests) share a broker.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Kept low: a broker may hold a fetch this long even when data is waiting.
    pub fetch_wait_max_ms: u32,
    pub session_timeout_ms: u32,
    /// `KAFKA_OPT_*` pass-through properties, already turned into librdkafka names.
    pub client_overrides: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let client_overrides = std::env::vars()
            .filter_map(|(k, v)| {
                k.strip_prefix("KAFKA_OPT_")
                    .map(|name| (name.to_ascii_lowercase().replace('_', "."), v))
            })
            .collect();
        Ok(Self {
            brokers: env_string("KAFKA_BROKERS", "127.0.0.1:9092"),
            topic_prefix: env_string("SLUICE_TOPIC_PREFIX", "sluice"),
            partitions: env_or("KAFKA_PARTITIONS", 6)?,
            replication_factor: env_or("KAFKA_REPLICATION_FACTOR", 1)?,
            fetch_wait_max_ms: env_or("KAFKA_FETCH_WAIT_MAX_MS", 10)?,
            session_timeout_ms: env_or("KAFKA_SESSION_TIMEOUT_MS", 10_000)?,
            client_overrides,
        })
    }
}

/// Retry tiers and the exponential backoff policy that picks among them.
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Ascending delays; each has its own retry topic, e.g. `sluice.retry.5s`.
    pub tiers: Vec<(String, Duration)>,
    pub initial_delay: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    /// Backoff's randomization factor: a delay d becomes a value in d·(1 ± jitter).
    pub jitter: f64,
    /// Attempts in all, the first included; a message failing this often is dead-lettered.
    pub max_attempts: u32,
}

impl RetryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let raw_tiers = env_string("RETRY_TIERS", "1s,5s,30s,2m,10m");
        let mut tiers = Vec::new();
        for label in raw_tiers
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let delay = parse_duration(label).map_err(|e| invalid("RETRY_TIERS", &raw_tiers, e))?;
            tiers.push((label.to_string(), delay));
        }
        if tiers.is_empty() || tiers.windows(2).any(|w| w[0].1 >= w[1].1) {
            return Err(invalid(
                "RETRY_TIERS",
                &raw_tiers,
                "need one or more delays in ascending order",
            ));
        }
        let config = Self {
            tiers,
            initial_delay: env_duration("RETRY_INITIAL_DELAY", "1s")?,
            multiplier: env_or("RETRY_MULTIPLIER", 5.0)?,
            max_delay: env_duration("RETRY_MAX_DELAY", "10m")?,
            jitter: env_or("RETRY_JITTER", 0.1)?,
            max_attempts: env_or("MAX_ATTEMPTS", 5)?,
        };
        if !(0.0..1.0).contains(&config.jitter) {
            return Err(invalid(
                "RETRY_JITTER",
                &config.jitter.to_string(),
                "must be in [0, 1)",
            ));
        }
        if config.multiplier < 1.0 {
            return Err(invalid(
                "RETRY_MULTIPLIER",
                &config.multiplier.to_string(),
                "must be ≥ 1",
            ));
        }
        let longest_tier = config.tiers[config.tiers.len() - 1].1;
        if config.max_delay > longest_tier {
            return Err(invalid(
                "RETRY_MAX_DELAY",
                &format!("{:?}", config.max_delay),
                "must not exceed the longest retry tier",
            ));
        }
        if config.max_attempts == 0 {
            return Err(invalid("MAX_ATTEMPTS", "0", "must be ≥ 1"));
        }
        Ok(config)
    }
}

/// How one worker process consumes: its identity, batch shape and concurrency.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub instance_id: String,
    pub host: String,
    /// Most messages handed to a handler at once.
    pub batch_max: usize,
    /// How long a batch may wait to fill after its first message.
    pub batch_wait: Duration,
    /// Batches handled at the same time; with `batch_max`, bounds the messages in flight.
    pub batches_in_flight: usize,
    pub heartbeat_interval: Duration,
}

impl WorkerConfig {
    /// `role` names the service; the batch shape given is its default, overridable by
    /// `<ROLE>_BATCH_MAX`, `<ROLE>_BATCH_WAIT` and `<ROLE>_BATCHES_IN_FLIGHT`.
    pub fn from_env(
        role: &str,
        batch_max: usize,
        batch_wait: &str,
        in_flight: usize,
    ) -> Result<Self, ConfigError> {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let default_id = format!("{role}-{host}-{}", &suffix[..8]);
        let prefix = role.to_ascii_uppercase();
        Ok(Self {
            instance_id: env_string("WORKER_INSTANCE_ID", &default_id),
            host,
            batch_max: env_or(&format!("{prefix}_BATCH_MAX"), batch_max)?.max(1),
            batch_wait: env_duration(&format!("{prefix}_BATCH_WAIT"), batch_wait)?,
            batches_in_flight: env_or(&format!("{prefix}_BATCHES_IN_FLIGHT"), in_flight)?.max(1),
            heartbeat_interval: env_duration("HEARTBEAT_INTERVAL", "2s")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("40").unwrap(), Duration::from_millis(40));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
