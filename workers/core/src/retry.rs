//! Where a failed message goes: a delay-tier retry topic chosen by exponential backoff, or,
//! once its attempts are spent (or the failure is permanent), the dead-letter topic.
//!
//! A message waits in the tier whose delay is the smallest one not shorter than the policy's
//! delay, and is due exactly one tier delay after it was published there. Every message of a
//! tier partition therefore becomes due in publish order, which lets the retry service hold a
//! partition at its head message without anything due sooner queuing behind it.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use chrono::Utc;
use rdkafka::message::{Headers, OwnedHeaders};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use sluice_messages::{header, Topics};

use crate::config::RetryConfig;
use crate::error::{ErrorClass, HandlerError, PipelineError};
use crate::headers::{header_i64, header_str, rewrite_headers};
use crate::job::Job;
use crate::kafka::{Output, PublishError, Publisher};

/// Longest error text kept in a header; the rest is cut.
const MAX_ERROR_LEN: usize = 2_000;
/// What is kept of a dead letter's payload when the whole was too large for the broker.
pub const TRUNCATED_PAYLOAD: usize = 64 * 1024;
/// What is kept of a cut dead letter's own (not sluice's) headers, in bytes of names and values.
pub const TRUNCATED_FOREIGN_HEADERS: usize = 16 * 1024;
/// What is kept of a key longer than this in a dead letter cut to fit: its first bytes. Keys
/// sluice writes are ids and KV keys (at most 1 KiB); a longer one came from elsewhere.
pub const TRUNCATED_KEY: usize = 1024;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    pub fn new(config: RetryConfig) -> Self {
        Self { config }
    }

    /// The backoff policy's delay after the `failures`-th failure (1 for the first).
    pub fn delay_for(&self, failures: u32) -> Duration {
        let c = &self.config;
        let mut backoff = ExponentialBackoff {
            current_interval: c.initial_delay,
            initial_interval: c.initial_delay,
            randomization_factor: c.jitter,
            multiplier: c.multiplier,
            max_interval: c.max_delay,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = c.initial_delay;
        for _ in 0..failures.max(1) {
            delay = backoff.next_backoff().unwrap_or(c.max_delay);
        }
        // Jitter may push past the cap; the cap is what keeps every delay within a tier.
        delay.min(c.max_delay)
    }

    /// Index of the tier that holds a message for `delay`.
    pub fn tier_for(&self, delay: Duration) -> usize {
        let tiers = &self.config.tiers;
        tiers
            .iter()
            .position(|(_, tier)| *tier >= delay)
            .unwrap_or(tiers.len() - 1)
    }

    /// Turns a failed message into its next hop: a retry tier, due back at `way_back` (the
    /// failing stage's returns topic), or the dead-letter topic. With no way back (a stage
    /// that retries in place, the retry service itself) it is always the dead letters.
    pub fn route_failure(
        &self,
        topics: &Topics,
        way_back: Option<&str>,
        job: &Job,
        error: &HandlerError,
    ) -> Output {
        let headers = job.headers.as_ref();
        let failures = job.attempt;
        let now_ms = Utc::now().timestamp_millis();
        let mut message = error.message();
        truncate_at_char(&mut message, MAX_ERROR_LEN);
        let class = error.class().map_or("interrupted", ErrorClass::as_str);
        let mut add = vec![
            (header::FAILURES, failures.to_string()),
            (header::ERROR_CLASS, class.to_string()),
            (header::ERROR, message),
            (
                header::ORIGINAL_TOPIC,
                header_str(headers, header::ORIGINAL_TOPIC)
                    .unwrap_or(&job.topic)
                    .to_string(),
            ),
            (
                header::ORIGINAL_PARTITION,
                header_i64(headers, header::ORIGINAL_PARTITION)
                    .unwrap_or(job.partition.into())
                    .to_string(),
            ),
            (
                header::ORIGINAL_OFFSET,
                header_i64(headers, header::ORIGINAL_OFFSET)
                    .unwrap_or(job.offset)
                    .to_string(),
            ),
            (
                header::FIRST_FAILURE_MS,
                header_i64(headers, header::FIRST_FAILURE_MS)
                    .unwrap_or(now_ms)
                    .to_string(),
            ),
        ];
        let retry_to =
            way_back.filter(|_| error.is_retryable() && failures < self.config.max_attempts);
        let topic = if let Some(way_back) = retry_to {
            let (topic, tier_delay) = self.tier_after(topics, failures, error.earliest_retry());
            add.push((
                header::DUE_MS,
                (now_ms + tier_delay.as_millis() as i64).to_string(),
            ));
            add.push((header::RETURN_TOPIC, way_back.to_string()));
            topic.clone()
        } else {
            if let Some(id) = job_id_of(&job.payload) {
                add.push((header::JOB_ID, id.to_string()));
            }
            topics.dead_letters()
        };
        Output {
            topic,
            key: job.key.clone(),
            payload: job.payload.clone(),
            headers: Some(rewrite_headers(headers, &header::PER_FAILURE, &add)),
        }
    }

    /// The retry tier for the `failures`-th failure: the policy's delay, or the delay a
    /// dependency asked for when that is longer (capped by the longest tier).
    fn tier_after<'t>(
        &self,
        topics: &'t Topics,
        failures: u32,
        asked: Option<Duration>,
    ) -> &'t (String, Duration) {
        let delay = self.delay_for(failures).max(asked.unwrap_or_default());
        &topics.retry_tiers[self.tier_for(delay)]
    }

    /// Attempts in all before a message is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.config.max_attempts
    }
}

/// `dead_letter` cut to fit any broker: its payload to [`TRUNCATED_PAYLOAD`] bytes, its key to
/// [`TRUNCATED_KEY`] and the message's own headers to [`TRUNCATED_FOREIGN_HEADERS`] (kept in
/// order while they fit), for when the broker refused it as too large. sluice's headers are bounded and all kept;
/// the original size, and how many headers were dropped, are said in headers.
fn truncated(dead_letter: &Output) -> Output {
    let original = dead_letter.payload.len();
    let mut payload = dead_letter.payload.clone();
    payload.truncate(TRUNCATED_PAYLOAD);
    let mut headers = OwnedHeaders::new();
    let (mut foreign_bytes, mut dropped) = (0, 0);
    for h in dead_letter.headers.iter().flat_map(|all| all.iter()) {
        if !h.key.starts_with(header::PREFIX) {
            let size = h.key.len() + h.value.map_or(0, <[u8]>::len);
            if foreign_bytes + size > TRUNCATED_FOREIGN_HEADERS {
                dropped += 1;
                continue;
            }
            foreign_bytes += size;
        }
        headers = headers.insert(h);
    }
    let mut add = vec![(header::TRUNCATED_FROM, original.to_string())];
    if dropped > 0 {
        add.push((header::HEADERS_DROPPED, dropped.to_string()));
    }
    Output {
        topic: dead_letter.topic.clone(),
        key: dead_letter
            .key
            .as_ref()
            .map(|key| key[..key.len().min(TRUNCATED_KEY)].to_vec()),
        payload,
        headers: Some(rewrite_headers(Some(&headers), &[], &add)),
    }
}

/// Publishes a dead letter, cut to [`TRUNCATED_PAYLOAD`] if the broker finds it too large.
/// False when shutdown came first; an error when the dead letters refuse it anyway, since
/// then nothing can be parked and the stage must stop.
pub async fn publish_dead_letter(
    publisher: &Publisher,
    letter: &Output,
    shutdown: &CancellationToken,
) -> Result<bool, PipelineError> {
    let refused = match publisher.publish(letter, shutdown).await {
        Ok(()) => return Ok(true),
        Err(PublishError::Interrupted) => return Ok(false),
        Err(e) if e.too_large() => match publisher.publish(&truncated(letter), shutdown).await {
            Ok(()) => return Ok(true),
            Err(PublishError::Interrupted) => return Ok(false),
            Err(e) => e,
        },
        Err(e) => e,
    };
    Err(PipelineError::Fatal {
        class: ErrorClass::Undeliverable,
        message: format!("the dead-letter topic refuses messages: {refused}"),
    })
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
pub fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
    }
}

/// The job id of a payload that is at least an envelope's worth of JSON.
fn job_id_of(payload: &[u8]) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Uuid,
    }
    serde_json::from_slice::<IdOnly>(payload).ok().map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Header;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            tiers: ["1s", "5s", "30s", "2m", "10m"]
                .iter()
                .map(|t| (t.to_string(), crate::config::parse_duration(t).unwrap()))
                .collect(),
            initial_delay: Duration::from_secs(1),
            multiplier: 5.0,
            max_delay: Duration::from_secs(600),
            jitter,
            max_attempts: 5,
        })
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        let delays: Vec<u64> = (1..=6).map(|f| p.delay_for(f).as_secs()).collect();
        assert_eq!(delays, vec![1, 5, 25, 125, 600, 600]);
    }

    #[test]
    fn jittered_delays_stay_within_the_jitter_and_the_cap() {
        let p = policy(0.3);
        for (failures, nominal) in [(1, 1.0), (2, 5.0), (3, 25.0), (4, 125.0), (5, 600.0)] {
            for _ in 0..50 {
                let delay = p.delay_for(failures).as_secs_f64();
                assert!(
                    delay >= nominal * 0.7 - 1e-9,
                    "{delay} after {failures} failures"
                );
                assert!(
                    delay <= (nominal * 1.3).min(600.0) + 1e-9,
                    "{delay} after {failures} failures"
                );
            }
        }
    }

    #[test]
    fn a_retry_after_longer_than_the_policy_picks_a_longer_tier() {
        let p = policy(0.0);
        let topics = Topics::new("p", &p.config.tiers);
        assert_eq!(p.tier_after(&topics, 1, None).0, "p.retry.1s");
        assert_eq!(
            p.tier_after(&topics, 1, Some(Duration::from_secs(20))).0,
            "p.retry.30s"
        );
        assert_eq!(
            p.tier_after(&topics, 1, Some(Duration::from_secs(9_999))).0,
            "p.retry.10m"
        );
    }

    #[test]
    fn a_cut_dead_letter_keeps_sluice_headers_the_foreign_ones_that_fit_and_a_keys_start() {
        let big = "v".repeat(TRUNCATED_FOREIGN_HEADERS / 2);
        let headers = [
            ("traceparent", "00-abc-01"),
            ("big-1", big.as_str()),
            (header::FAILURES, "1"),
            ("big-2", big.as_str()),
            ("after", "small"),
        ]
        .iter()
        .fold(OwnedHeaders::new(), |all, (key, value)| {
            all.insert(Header {
                key,
                value: Some(*value),
            })
        });
        let letter = Output {
            topic: "dl".to_string(),
            key: Some(vec![b'k'; TRUNCATED_KEY * 4]),
            payload: vec![b'x'; TRUNCATED_PAYLOAD * 3],
            headers: Some(headers),
        };
        let cut = truncated(&letter);
        let kept = cut.headers.as_ref();
        assert_eq!(cut.payload.len(), TRUNCATED_PAYLOAD);
        assert_eq!(cut.key, Some(vec![b'k'; TRUNCATED_KEY]));
        assert_eq!(
            header_i64(kept, header::TRUNCATED_FROM),
            Some(TRUNCATED_PAYLOAD as i64 * 3)
        );
        assert_eq!(header_i64(kept, header::HEADERS_DROPPED), Some(1));
        assert_eq!(header_str(kept, header::FAILURES), Some("1"));
        assert_eq!(header_str(kept, "traceparent"), Some("00-abc-01"));
        assert_eq!(header_str(kept, "big-1"), Some(big.as_str()));
        assert_eq!(header_str(kept, "big-2"), None);
        assert_eq!(
            header_str(kept, "after"),
            Some("small"),
            "a later one that fits"
        );
        let foreign: usize = kept
            .unwrap()
            .iter()
            .filter(|h| !h.key.starts_with(header::PREFIX))
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum();
        assert!(foreign <= TRUNCATED_FOREIGN_HEADERS);
    }

    #[test]
    fn a_delay_waits_in_the_smallest_tier_not_shorter_than_it() {
        let p = policy(0.0);
        assert_eq!(p.tier_for(Duration::from_millis(900)), 0);
        assert_eq!(p.tier_for(Duration::from_secs(1)), 0);
        assert_eq!(p.tier_for(Duration::from_millis(1001)), 1);
        assert_eq!(p.tier_for(Duration::from_secs(25)), 2);
        assert_eq!(p.tier_for(Duration::from_secs(7200)), 4);
    }
}
