//! Typed configuration, read once from the environment (and `.env`, when present).
//!
//! One struct per concern; every variable is documented with its default in `.env.example`.
//! Kafka client properties that sluice does not model (SASL, SSL, …) pass straight through:
//! `KAFKA_OPT_SECURITY_PROTOCOL=SASL_SSL` becomes `security.protocol=SASL_SSL`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sluice_messages::heartbeat::LIVE_WITHIN_SECS;
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

/// Reads a number that must be finite: `NaN` parses as an `f64` and slips through every range
/// check written as a comparison (`NaN < 1.0` is false), and `inf` is no sane setting either.
pub fn env_f64(name: &str, default: f64) -> Result<f64, ConfigError> {
    let value: f64 = env_or(name, default)?;
    if !value.is_finite() {
        return Err(invalid(name, &value.to_string(), "must be a finite number"));
    }
    Ok(value)
}

pub fn env_duration(name: &str, default: &str) -> Result<Duration, ConfigError> {
    let raw = env_string(name, default);
    parse_duration(&raw).map_err(|e| invalid(name, &raw, e))
}

/// The longest duration any setting takes. Durations are added to `Instant::now()` (deadlines,
/// batch windows, timeouts), which panics on overflow, so a typo such as `99999999999h` must
/// be refused here rather than crash a worker later; nothing sluice waits for (a retry tier,
/// a timeout, a grace period) sensibly lasts longer than a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `250ms`, `5s`, `2m`, `1h`, up to [`MAX_DURATION`]; a bare number means milliseconds.
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
    if millis > MAX_DURATION.as_secs_f64() * 1_000.0 {
        return Err(format!(
            "duration too long: at most {}h",
            MAX_DURATION.as_secs() / 3_600
        ));
    }
    Ok(Duration::from_micros((millis * 1_000.0) as u64))
}

/// How long work in flight may still finish after SIGTERM, unless `SHUTDOWN_GRACE` says.
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";

/// How to reach the broker, and how sluice's topics are named and sized.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Prefix of every topic and consumer group, so several pipelines (or tests) share a broker.
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long the broker may hold a fetch on the job and result topics, and the retry tiers,
    /// when it has no data.
    /// Kafka answers as soon as data arrives, so this costs no latency; it sets how often an
    /// idle consumer asks again, and how long a resumed or newly assigned partition may wait
    /// for the fetch under way to end.
    pub fetch_wait_max_ms: u32,
    /// The same for topics nobody pauses one by one (returns, dead letters, heartbeats).
    pub slow_fetch_wait_max_ms: u32,
    pub session_timeout_ms: u32,
    /// A member that does not poll for this long leaves its group; the loop polls all the time
    /// (backpressure pauses partitions instead), so this only catches a wedged process.
    pub max_poll_interval_ms: u32,
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
        let config = Self {
            brokers: env_string("KAFKA_BROKERS", "127.0.0.1:9092"),
            topic_prefix: env_string("SLUICE_TOPIC_PREFIX", "sluice"),
            partitions: env_or("KAFKA_PARTITIONS", 6)?,
            replication_factor: env_or("KAFKA_REPLICATION_FACTOR", 1)?,
            fetch_wait_max_ms: env_or("KAFKA_FETCH_WAIT_MAX_MS", 1000)?,
            slow_fetch_wait_max_ms: env_or("KAFKA_SLOW_FETCH_WAIT_MAX_MS", 5000)?,
            session_timeout_ms: env_or("KAFKA_SESSION_TIMEOUT_MS", 10_000)?,
            max_poll_interval_ms: env_or("KAFKA_MAX_POLL_INTERVAL_MS", 300_000)?,
            client_overrides,
        };
        at_least("KAFKA_PARTITIONS", config.partitions, 1)?;
        at_least("KAFKA_REPLICATION_FACTOR", config.replication_factor, 1)?;
        at_least("KAFKA_FETCH_WAIT_MAX_MS", config.fetch_wait_max_ms, 1)?;
        at_least(
            "KAFKA_SLOW_FETCH_WAIT_MAX_MS",
            config.slow_fetch_wait_max_ms,
            1,
        )?;
        // Kafka refuses a group member whose session is shorter (group.min.session.timeout.ms).
        at_least("KAFKA_SESSION_TIMEOUT_MS", config.session_timeout_ms, 6_000)?;
        at_least(
            "KAFKA_MAX_POLL_INTERVAL_MS",
            config.max_poll_interval_ms,
            config.session_timeout_ms,
        )?;
        Ok(config)
    }
}

fn at_least<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(
            name,
            &value.to_string(),
            format!("must be at least {min}"),
        ));
    }
    Ok(())
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
            multiplier: env_f64("RETRY_MULTIPLIER", 5.0)?,
            max_delay: env_duration("RETRY_MAX_DELAY", "10m")?,
            jitter: env_f64("RETRY_JITTER", 0.1)?,
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

/// One worker process: its identity, liveness, and the limits that stop it loudly instead of
/// letting it stall or dead-letter everything.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub instance_id: String,
    pub host: String,
    pub heartbeat_interval: Duration,
    /// With work waiting and nothing finished for this long, the stage reports `stalled`.
    pub stall_after: Duration,
    /// After shutdown, how long work in flight may still finish; what is left is abandoned
    /// uncommitted and delivered again later.
    pub shutdown_grace: Duration,
    /// More than this share of the last `dead_letter_window` messages dead-lettered raises an
    /// alarm; the stage stops when a dependency failed that many (1 turns both off).
    pub dead_letter_max_share: f64,
    pub dead_letter_window: usize,
}

impl WorkerConfig {
    /// `role` names the service in the default instance id.
    pub fn from_env(role: &str) -> Result<Self, ConfigError> {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let default_id = format!("{role}-{host}-{}", &suffix[..8]);
        let config = Self {
            instance_id: env_string("WORKER_INSTANCE_ID", &default_id),
            host,
            heartbeat_interval: env_duration("HEARTBEAT_INTERVAL", "2s")?,
            stall_after: env_duration("STALL_AFTER", "60s")?,
            shutdown_grace: env_duration("SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE)?,
            dead_letter_max_share: env_f64("DEAD_LETTER_MAX_SHARE", 0.5)?,
            dead_letter_window: env_or("DEAD_LETTER_WINDOW", 200)?,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        if self.heartbeat_interval < Duration::from_millis(10)
            || self.heartbeat_interval > Duration::from_secs(LIVE_WITHIN.as_secs() / 2)
        {
            return Err(invalid(
                "HEARTBEAT_INTERVAL",
                &ms(self.heartbeat_interval),
                format!(
                    "must be from 10ms to {}s, so that a live worker stays listed as live",
                    LIVE_WITHIN.as_secs() / 2
                ),
            ));
        }
        if self.stall_after < self.heartbeat_interval {
            return Err(invalid(
                "STALL_AFTER",
                &ms(self.stall_after),
                "must be at least HEARTBEAT_INTERVAL",
            ));
        }
        // `from_env` parses within the bound already; this holds it for configurations built
        // in code as well.
        for (name, value) in [
            ("STALL_AFTER", self.stall_after),
            ("SHUTDOWN_GRACE", self.shutdown_grace),
        ] {
            if value > MAX_DURATION {
                return Err(invalid(
                    name,
                    &ms(value),
                    format!("must be at most {}h", MAX_DURATION.as_secs() / 3_600),
                ));
            }
        }
        if !(self.dead_letter_max_share > 0.0 && self.dead_letter_max_share <= 1.0) {
            return Err(invalid(
                "DEAD_LETTER_MAX_SHARE",
                &self.dead_letter_max_share.to_string(),
                "must be in (0, 1]",
            ));
        }
        if self.dead_letter_window == 0 {
            return Err(invalid("DEAD_LETTER_WINDOW", "0", "must be at least 1"));
        }
        Ok(())
    }
}

/// How long a heartbeat keeps a worker live (mirrors `sluice_messages::heartbeat`).
const LIVE_WITHIN: Duration = Duration::from_secs(LIVE_WITHIN_SECS as u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn worker() -> WorkerConfig {
        WorkerConfig {
            instance_id: "w".into(),
            host: "h".into(),
            heartbeat_interval: Duration::from_secs(2),
            stall_after: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            dead_letter_max_share: 0.5,
            dead_letter_window: 200,
        }
    }

    #[test]
    fn a_zero_heartbeat_interval_is_refused() {
        assert!(worker().validate().is_ok());
        let zero = WorkerConfig {
            heartbeat_interval: Duration::ZERO,
            ..worker()
        };
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("HEARTBEAT_INTERVAL"), "{error}");
        let too_slow = WorkerConfig {
            heartbeat_interval: Duration::from_secs(30),
            ..worker()
        };
        assert!(too_slow.validate().is_err());
        let no_share = WorkerConfig {
            dead_letter_max_share: 0.0,
            ..worker()
        };
        assert!(no_share.validate().is_err());
    }

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

    #[test]
    fn durations_beyond_a_day_are_refused_naming_the_variable() {
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        // A name no other test reads: tests run in parallel and share the environment.
        let name = "SLUICE_CONFIG_TEST_HUGE_DURATION";
        std::env::set_var(name, "99999999999999999999h");
        let error = env_duration(name, "1s").unwrap_err().to_string();
        std::env::remove_var(name);
        assert!(
            error.contains(name) && error.contains("at most 24h"),
            "{error}"
        );
    }

    #[test]
    fn worker_durations_built_in_code_stay_within_a_day() {
        let two_days = Duration::from_secs(2 * 24 * 60 * 60);
        let grace = WorkerConfig {
            shutdown_grace: two_days,
            ..worker()
        };
        let error = grace.validate().unwrap_err().to_string();
        assert!(error.contains("SHUTDOWN_GRACE"), "{error}");
        let stall = WorkerConfig {
            stall_after: two_days,
            ..worker()
        };
        let error = stall.validate().unwrap_err().to_string();
        assert!(error.contains("STALL_AFTER"), "{error}");
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        // Only this test sets these variables, and one at a time, so each error is its own.
        for (name, value) in [
            ("RETRY_MULTIPLIER", "NaN"),
            ("RETRY_MULTIPLIER", "inf"),
            ("RETRY_JITTER", "NaN"),
            ("RETRY_JITTER", "-inf"),
            ("DEAD_LETTER_MAX_SHARE", "NaN"),
            ("DEAD_LETTER_MAX_SHARE", "inf"),
        ] {
            std::env::set_var(name, value);
            let error = if name.starts_with("RETRY_") {
                RetryConfig::from_env().map(drop)
            } else {
                WorkerConfig::from_env("test").map(drop)
            };
            std::env::remove_var(name);
            let error = error.unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }
}
